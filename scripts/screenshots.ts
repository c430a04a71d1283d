/**
 * `npm run screenshots`: the README's pictures of the operations view and GraphiQL
 * (docs/dashboard.png, docs/graphiql.png). It starts what `npm start` starts (an API, a cpu
 * and a gpu worker) on a private redis-server, sends a minute or so of traffic so the plots
 * have something to show, then photographs both pages in Debian's Chromium, offline.
 *
 * BATCHLINE_SCREENSHOT_SECONDS sets the traffic's length (default 75).
 */
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startPrivateRedis } from '../harness/private-redis.ts';
import { dropPrefix, startApi, startWorker, uniquePrefix } from '../harness/stack.ts';
import { launchBrowser, offlineContext } from '../harness/browser.ts';
import { loadNameGenderSplit } from './models/names-dataset.ts';

const DOCS = fileURLToPath(new URL('../docs/', import.meta.url));
const seconds = Number(process.env.BATCHLINE_SCREENSHOT_SECONDS ?? 75);
// Names drawn from the model's own data keep its predicted class mix, as real traffic would
// (the drift monitor then has nothing to report); some come back, so the cache has hits.
const { holdout, train } = loadNameGenderSplit();
const NAMES = [...holdout, ...train].map((n) => n.name);

async function post(url: string, query: string, variables: Record<string, unknown> = {}): Promise<void> {
  await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) }).then(
    (r) => r.arrayBuffer(),
  );
}

/** Closed-loop clients: each sends its next request when the last one is answered. */
async function traffic(url: string, until: number): Promise<void> {
  const NAME = 'query($t: String!) { predict(model: "name-gender", input: { text: $t }) { label } }';
  const MLP = 'query($f: [Float!]!) { predict(model: "mlp-bench", input: { features: $f }) { label } }';
  let n = 0;
  const client = async (kind: 'name' | 'mlp'): Promise<void> => {
    while (Date.now() < until) {
      if (kind === 'name') await post(url, NAME, { t: NAMES[Math.floor(Math.random() * (n++ % 4 === 0 ? 50 : NAMES.length))] });
      else await post(url, MLP, { f: Array.from({ length: 512 }, () => Math.random()) });
      // Bursts and lulls, so the plots have a shape.
      if (Math.floor(Date.now() / 15000) % 2 === 1) await new Promise((r) => setTimeout(r, 40));
    }
  };
  await Promise.all([...Array.from({ length: 3 }, () => client('name')), ...Array.from({ length: 6 }, () => client('mlp'))]);
}

const redis = await startPrivateRedis();
const opts = { redisUrl: redis.url, prefix: uniquePrefix('screenshots') };
const workers = [await startWorker('cpu', opts), await startWorker('gpu', opts)];
const api = await startApi(opts);
const browser = await launchBrowser();
try {
  console.log(`sending ${seconds} s of traffic…`);
  await traffic(api.url, Date.now() + seconds * 1000);
  await post(api.url, 'mutation { runMaintenance(task: "drift-monitor") }');
  mkdirSync(DOCS, { recursive: true });
  const { context, outside } = await offlineContext(browser, { width: 1280, height: 900 });
  const page = await context.newPage();
  await page.goto(api.url.replace(/\/graphql$/, '/dashboard'));
  await page.locator('[data-model="mlp-bench"] [data-testid="try-it"]').waitFor();
  const form = page.locator('[data-model="name-gender"] [data-testid="try-it"]');
  await form.getByRole('button', { name: 'Predict' }).click();
  await form.locator('[data-testid="try-label"]').waitFor();
  // Two payloads more, so the figures are the latest.
  await page.waitForFunction(() => document.getElementById('status')?.dataset.at !== undefined);
  await page.screenshot({ path: `${DOCS}dashboard.png`, fullPage: true });

  const graphiql = await context.newPage();
  await graphiql.goto(api.url);
  await graphiql.locator('.graphiql-execute-button').click();
  await graphiql.locator('.graphiql-response').filter({ hasText: 'female' }).waitFor();
  await graphiql.screenshot({ path: `${DOCS}graphiql.png` });
  if (outside.length) throw new Error(`the pages tried to reach outside this machine: ${outside.join(', ')}`);
  console.log(`wrote ${DOCS}dashboard.png and ${DOCS}graphiql.png`);
} finally {
  await browser.close();
  await api.close();
  await Promise.all(workers.map((w) => w.stop()));
  await dropPrefix(opts.redisUrl, opts.prefix);
  await redis.stop();
}
