/**
 * A real browser for the browser tests and the screenshots: Debian's Chromium driven by playwright-core,
 * headless, with every request that would leave the machine aborted and recorded, so a test
 * can assert that a page needs nothing from outside.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';

export const CHROMIUM = process.env.BATCHLINE_CHROMIUM ?? '/usr/bin/chromium';

/** Fails loudly without Chromium: a skipped browser test would pass for the wrong reason. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `no Chromium at ${CHROMIUM}: install Debian's package (apt-get update && apt-get install -y chromium), as .ci/run does`,
    );
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Name resolution off for every host but loopback: a request that slipped past the
    // route below still could not leave.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
    ],
  });
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** True for URLs that stay on this machine (data: and blob: are not requests at all). */
export function staysLocal(url: string): boolean {
  const u = new URL(url);
  if (u.protocol === 'data:' || u.protocol === 'blob:' || u.protocol === 'about:') return true;
  return LOOPBACK.has(u.hostname);
}

export interface OfflineContext {
  context: BrowserContext;
  /** Every URL off loopback that a page of the context tried to reach. */
  outside: string[];
}

export async function offlineContext(browser: Browser, viewport = { width: 1280, height: 900 }): Promise<OfflineContext> {
  const context = await browser.newContext({ viewport });
  const outside: string[] = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (staysLocal(url)) return route.continue();
    outside.push(url);
    return route.abort('blockedbyclient');
  });
  // Requests the route does not see (WebSockets; anything from a worker) are recorded too.
  context.on('request', (req) => {
    if (!staysLocal(req.url())) outside.push(req.url());
  });
  context.on('page', (page) => page.on('websocket', (ws) => !staysLocal(ws.url()) && outside.push(ws.url())));
  return { context, outside };
}
