/**
 * The operations view in a real browser (Debian's Chromium), nothing reachable off this
 * machine: it lists the demo models, its live figures move after a burst of predictions,
 * the try-it form answers for name-gender, a rollout panel appears when a policy is set, and with auth on it asks for a key and shows a
 * key without `admin` only its models.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { gql } from '../support/clients.ts';
import { startApi, uniquePrefix, type RunningApi } from '../../harness/stack.ts';
import { useStack } from '../support/use-stack.ts';
import { launchBrowser, offlineContext, type OfflineContext } from '../../harness/browser.ts';
import { hashApiKey } from '../../server/auth.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('dashboard');
const stack = useStack({ redisUrl, prefix }, ['cpu']);

let browser: Browser;
let offline: OfflineContext;

beforeAll(async () => {
  browser = await launchBrowser();
  offline = await offlineContext(browser);
});

afterAll(async () => {
  await browser?.close();
});

const pageUrl = (api: RunningApi) => api.url.replace(/\/graphql$/, '/dashboard');
const card = (page: Page, model: string) => page.locator(`[data-testid="model"][data-model="${model}"]`);
const figure = (page: Page, model: string, name: string) => card(page, model).locator(`[data-figure="${name}"] .figure-value`).innerText();

describe('operations view', () => {
  let page: Page;

  beforeAll(async () => {
    page = await offline.context.newPage();
    await page.goto(pageUrl(stack.api));
  });

  it('lists the demo models with their version, pool, inputs and batching', async () => {
    await card(page, 'name-gender').waitFor();
    await card(page, 'mlp-bench').waitFor();
    const nameGender = await card(page, 'name-gender').innerText();
    expect(nameGender).toMatch(/pool cpu/);
    expect(nameGender).toMatch(/features FP32\[\?×1024\] \(from text\)/);
    // Both batchers: the edge gathers a cpu model's requests, its worker runs each job alone.
    await expect.poll(() => card(page, 'name-gender').locator('[data-testid="edge-batching"]').innerText()).toBe('≤ 16 rows, 2 ms wait');
    expect(await card(page, 'name-gender').locator('[data-testid="worker-batching"]').innerText()).toBe('each job alone');
    // A gpu model (no gpu worker here, so no live limit yet) merges jobs up to its config.
    expect(await card(page, 'mlp-bench').locator('[data-testid="worker-batching"]').innerText()).toBe(
      'fixed, ≤ 32 rows, 5 ms wait, SLO 50 ms',
    );
    expect(await card(page, 'mlp-bench').innerText()).toMatch(/input FP32\[\?×512\]/);
    await expect.poll(() => card(page, 'name-gender').locator('[data-testid="model-workers"]').innerText()).toBe('1 worker');
    // The execution provider its workers run, per version, and per worker in the process list.
    expect(await card(page, 'name-gender').locator('[data-testid="runs-on"]').allInnerTexts()).toEqual(['cpu']);
    // mlp-bench is the gpu pool's, and no gpu worker runs in this file.
    expect(await card(page, 'mlp-bench').locator('[data-testid="runs-on"]').allInnerTexts()).toEqual(['–']);
    // Which workers hold each version in memory, with its measured size (no budget here: the one worker holds it).
    expect(await card(page, 'name-gender').locator('[data-testid="in-memory"]').allInnerTexts()).toEqual([
      expect.stringMatching(/^1 of 1, \d+\.\d MiB$/),
    ]);
    expect(await card(page, 'mlp-bench').locator('[data-testid="in-memory"]').allInnerTexts()).toEqual(['0 of 0']);
    await expect.poll(() => page.locator('[data-testid="processes"] [data-testid="provider"]').allInnerTexts()).toEqual(['cpu']);
    expect(await page.locator('[data-testid="queues"]').innerText()).toMatch(/cpu\s+0/);
    expect(offline.outside).toEqual([]);
  });

  it('moves its figures after a burst of predictions, without a reload', async () => {
    expect(await figure(page, 'name-gender', 'rps')).toBe('0.0');
    const before = await page.locator('[data-testid="status"]').getAttribute('data-at');
    await Promise.all(
      Array.from({ length: 40 }, (_, i) => gql(stack.api.url, `{ predict(model: "name-gender", input: { text: "Burst${i}" }) { label } }`)),
    );
    await expect.poll(async () => Number(await figure(page, 'name-gender', 'rps')), { timeout: 20_000 }).toBeGreaterThan(0);
    // Latency split into queue and inference, from the API and the worker.
    for (const phase of ['total', 'queue', 'inference'])
      await expect.poll(() => figure(page, 'name-gender', `latency-${phase}`), { timeout: 20_000 }).toMatch(/^[\d.]+ \/ [\d.]+ ms$/);
    await expect.poll(() => figure(page, 'name-gender', 'batches'), { timeout: 20_000 }).not.toBe('0.0');
    await expect.poll(() => card(page, 'name-gender').locator('[data-testid="close-reasons"]').innerText()).toMatch(/full \d+/);
    expect(await figure(page, 'name-gender', 'cache')).toBe('0 %');
    expect(await page.locator('[data-testid="status"]').getAttribute('data-at')).not.toBe(before);
    expect(offline.outside).toEqual([]);
  });

  it('answers the try-it form for name-gender, with its timings', async () => {
    const form = card(page, 'name-gender').locator('[data-testid="try-it"]');
    await form.locator('[data-testid="try-text"]').fill('Maria');
    await form.getByRole('button', { name: 'Predict' }).click();
    await expect.poll(() => form.locator('[data-testid="try-label"]').innerText(), { timeout: 20_000 }).toMatch(/^female/);
    expect(await form.locator('[data-testid="try-timings"]').innerText()).toMatch(
      /queue [\d.]+ ms · batch wait [\d.]+ ms · inference [\d.]+ ms · total [\d.]+ ms/,
    );
    // A bad answer is shown with its code, not swallowed.
    await form.locator('[data-testid="try-text"]').fill('');
    await form.getByRole('button', { name: 'Predict' }).click();
    await expect.poll(() => form.locator('[data-testid="try-error"]').innerText(), { timeout: 20_000 }).toMatch(/^BAD_USER_INPUT/);
    expect(offline.outside).toEqual([]);
  });

  it('shows a model’s rollout once its policy says something: here, capture turned on live', async () => {
    const rollout = card(page, 'name-gender').locator('[data-testid="rollout"]');
    expect(await rollout.innerText()).toBe('');
    const set = (percent: number) =>
      gql(stack.api.url, `mutation { setCapture(model: "name-gender", capture: { percent: ${percent} }) { revision } }`);
    expect((await set(5)).body.errors).toBeUndefined();
    await expect.poll(() => rollout.locator('[data-testid="rollout-capture"]').innerText(), { timeout: 20_000 }).toBe('capture 5.0 %');
    expect(await rollout.locator('[data-testid="rollout-stable"]').innerText()).toBe('stable 1 (newest)');
    expect(await rollout.innerText()).toMatch(/live policy, revision 1/);
    await set(0);
    await expect.poll(() => rollout.innerText(), { timeout: 20_000 }).toBe('');
  });
});

describe('operations view with auth on', () => {
  const KEYS = { web: 'web-2f9c41d7b3', ops: 'ops-8e1a5c09d4' };
  let locked: RunningApi;
  let page: Page;
  let lockedOffline: OfflineContext;

  beforeAll(async () => {
    // A second replica on the same Redis: it shows the same deployment.
    locked = await startApi({
      redisUrl,
      prefix,
      env: {
        BATCHLINE_AUTH: 'true',
        BATCHLINE_API_KEYS: `web:${hashApiKey(KEYS.web)}:predict:name-gender;ops:${hashApiKey(KEYS.ops)}:predict:*,admin`,
      },
    });
    lockedOffline = await offlineContext(browser);
    page = await lockedOffline.context.newPage();
    await page.goto(pageUrl(locked));
  });

  afterAll(async () => {
    await page?.context().close();
    await locked?.close();
  });

  it('asks for a key, and refuses an unknown one', async () => {
    await page.locator('[data-testid="login"]').waitFor();
    expect(await page.locator('[data-testid="model"]').count()).toBe(0);
    await page.locator('[data-testid="key-input"]').fill('not-a-key');
    await page.locator('[data-testid="key-input"]').press('Enter');
    await expect.poll(() => page.locator('#login-message').innerText()).toMatch(/not known/);
    expect(await page.locator('[data-testid="model"]').count()).toBe(0);
  });

  it('shows a key without admin only its models, and no process list', async () => {
    await page.locator('[data-testid="key-input"]').fill(KEYS.web);
    await page.locator('[data-testid="key-input"]').press('Enter');
    await card(page, 'name-gender').waitFor();
    expect(await page.locator('[data-testid="viewer"]').innerText()).toBe('key web');
    expect(await page.locator('[data-testid="model"]').count()).toBe(1);
    expect(await page.locator('#processes').innerText()).toBe('');
    // The key reaches the try-it form's request too.
    const form = card(page, 'name-gender').locator('[data-testid="try-it"]');
    await form.getByRole('button', { name: 'Predict' }).click();
    await expect.poll(() => form.locator('[data-testid="try-label"]').innerText(), { timeout: 20_000 }).toMatch(/^female/);
  });

  it('shows an admin key every model and both API replicas', async () => {
    await page.locator('[data-testid="forget-key"]').click();
    await page.locator('[data-testid="key-input"]').fill(KEYS.ops);
    await page.locator('[data-testid="key-input"]').press('Enter');
    await card(page, 'mlp-bench').waitFor();
    expect(await page.locator('[data-testid="model"]').count()).toBe(3);
    await expect.poll(() => page.locator('[data-figure="api-replicas"] .figure-value').innerText()).toBe('2');
    expect(lockedOffline.outside).toEqual([]);
  });
});
