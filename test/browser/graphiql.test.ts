/**
 * GraphiQL in a real browser (Debian's Chromium), with every request off this machine
 * blocked: the page renders from the server's own assets, runs a `predict` query, and runs
 * a subscription (over SSE) to its final event.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { gql } from '../support/clients.ts';
import { startApi, uniquePrefix, type RunningApi } from '../../harness/stack.ts';
import { hashApiKey } from '../../server/auth.ts';
import { useStack } from '../support/use-stack.ts';
import { launchBrowser, offlineContext, type OfflineContext } from '../../harness/browser.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('graphiql');
const stack = useStack({ redisUrl, prefix }, ['cpu']);

let browser: Browser;
let offline: OfflineContext;
let page: Page;

beforeAll(async () => {
  browser = await launchBrowser();
  offline = await offlineContext(browser);
  page = await offline.context.newPage();
});

afterAll(async () => {
  await browser?.close();
});

/** Replaces an editor's text (Monaco) the way a paste does, so no brackets are auto-closed. */
async function setText(editor: ReturnType<Page['locator']>, text: string): Promise<void> {
  await editor.click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(text);
}

const setOperation = (text: string) => setText(page.locator('.graphiql-query-editor .monaco-editor').first(), text);

async function run(): Promise<void> {
  await page.locator('.graphiql-execute-button').click();
}

const responseText = () => page.locator('.graphiql-response').innerText();

describe('GraphiQL, offline', () => {
  it('renders from the server alone, and its default query predicts Maria', async () => {
    const res = await page.goto(stack.api.url);
    expect(res?.status()).toBe(200);
    // The schema arrived (introspection ran): the documentation explorer can be opened.
    await page.locator('.graphiql-execute-button').waitFor();
    await page.locator('.graphiql-query-editor .view-lines').filter({ hasText: 'name-gender' }).waitFor();
    await run();
    await expect.poll(responseText, { timeout: 30_000 }).toMatch(/"label":\s*"female"/);
    expect(await responseText()).toMatch(/"totalMs"/);
    expect(offline.outside).toEqual([]);
  });

  it('runs a subscription to its final event', async () => {
    const ticket = await gql<{ submitPrediction: { id: string } }>(
      stack.api.url,
      'mutation { submitPrediction(model: "name-gender", input: { text: "John" }) { id } }',
    );
    const id = ticket.body.data!.submitPrediction.id;
    await setOperation(`subscription { predictionResult(id: "${id}") { id status result { label } } }`);
    await page.locator('.graphiql-query-editor .view-lines').filter({ hasText: id }).waitFor();
    await run();
    await expect.poll(responseText, { timeout: 30_000 }).toMatch(/"status":\s*"COMPLETED"/);
    expect(await responseText()).toContain(id);
    expect(await responseText()).toMatch(/"label":\s*"male"/);
    expect(offline.outside).toEqual([]);
  });

  it('with auth on, the key in the Headers tab reaches queries and subscriptions', async () => {
    const KEY = 'graphiql-5d0c7a19e2';
    const locked: RunningApi = await startApi({
      redisUrl,
      prefix,
      env: { BATCHLINE_AUTH: 'true', BATCHLINE_API_KEYS: `web:${hashApiKey(KEY)}:predict:name-gender` },
    });
    try {
      await page.goto(locked.url);
      await setOperation('{ predict(model: "name-gender", input: { text: "Maria" }) { label } }');
      await run();
      await expect.poll(responseText, { timeout: 30_000 }).toMatch(/UNAUTHENTICATED/);
      await page.getByRole('button', { name: 'Headers' }).click();
      await setText(page.locator('.graphiql-editor-tool .monaco-editor').last(), `{"x-api-key": "${KEY}"}`);
      await run();
      await expect.poll(responseText, { timeout: 30_000 }).toMatch(/"label":\s*"female"/);
      const ticket = await gql<{ submitPrediction: { id: string } }>(
        locked.url,
        'mutation { submitPrediction(model: "name-gender", input: { text: "John" }) { id } }',
        {},
        { 'x-api-key': KEY },
      );
      const id = ticket.body.data!.submitPrediction.id;
      await setOperation(`subscription { predictionResult(id: "${id}") { status result { label } } }`);
      await run();
      await expect.poll(responseText, { timeout: 30_000 }).toMatch(/"status":\s*"COMPLETED"/);
      expect(offline.outside).toEqual([]);
    } finally {
      await locked.close();
    }
  });

  it('the check sees a request that would leave the machine (so the checks above can fail)', async () => {
    const probe = await offline.context.newPage();
    try {
      await probe.setContent('<img src="http://192.0.2.1/x.png">');
      await expect.poll(() => offline.outside.length).toBeGreaterThan(0);
      expect(offline.outside[0]).toMatch(/^http:\/\/192\.0\.2\.1\//);
    } finally {
      offline.outside.length = 0;
      await probe.close();
    }
  });
});
