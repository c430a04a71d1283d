/**
 * The k6 scripts against a real batchline with API keys on (issue 10, items 14 and 15): the
 * WebSocket script sends its key in connection_init and completes predictions; a refused key
 * (close 4401, or FORBIDDEN for a key without the model's scope) ends the run after one
 * connection, with the completed-predictions and auth thresholds failing, instead of
 * reconnecting in a tight loop and passing on zero predictions. Over HTTP, varied names are
 * answered by the model and a fixed text by the cache, which its threshold reports. One VU of
 * the k6 stand-in (test/support/k6) runs a few iterations of each scenario; no timing is judged.
 */
import { describe, expect, inject, it } from 'vitest';
import { hashApiKey } from '../../server/auth.ts';
import { callHandleSummary, loadScript, runScript, type Run } from '../support/k6/host.ts';
import { failedThresholds, summaryData } from '../support/k6/thresholds.ts';
import { uniquePrefix } from '../../harness/stack.ts';
import { useStack } from '../support/use-stack.ts';

const redisUrl = inject('redisUrl');
const KEYS = { alice: 'alice-k6-5d1e0c9b8a7f', bob: 'bob-k6-0a1b2c3d4e5f' };
const API_KEYS = [`alice:${hashApiKey(KEYS.alice)}:predict:*`, `bob:${hashApiKey(KEYS.bob)}:predict:mlp-bench`].join(';');
const stack = useStack({ redisUrl, prefix: uniquePrefix('k6'), env: { BATCHLINE_AUTH: 'true', BATCHLINE_API_KEYS: API_KEYS } }, ['cpu']);

const DIR = new URL('../../loadtests/', import.meta.url).pathname;
const HTTP = `${DIR}predict-http.js`;
const WS = `${DIR}submit-subscribe-ws.js`;

const base = () => stack.api.url.replace(/\/graphql$/, '');
const count = (run: Run, metric: string, tags: Record<string, string> = {}) =>
  run.samples
    .filter((s) => s.metric === metric && Object.entries(tags).every(([k, v]) => s.tags[k] === v))
    .reduce((a, s) => a + s.value, 0);

async function thresholdsFailed(script: string, env: Record<string, string>, run: Run): Promise<string[]> {
  return failedThresholds(summaryData((await loadScript(script, env)).options, run));
}

describe('submit-subscribe-ws.js with API keys on (item 14)', () => {
  it('sends the key in connection_init and completes PER_CONNECTION predictions a connection', async () => {
    const env = { BASE_URL: base(), API_KEY: KEYS.alice, MODEL: 'name-gender', INPUT: 'names', PER_CONNECTION: '3' };
    const run = await runScript(WS, { env, scenario: 'subscribers', iterations: 2 });
    expect(run.errors).toEqual([]);
    expect(run.aborted).toBeUndefined();
    expect(run.connections).toBe(2);
    expect(count(run, 'predictions_completed')).toBe(6);
    expect(count(run, 'prediction_failures')).toBe(0);
    // Every threshold but the latency SLO, which this test does not judge.
    expect((await thresholdsFailed(WS, env, run)).filter((t) => !t.startsWith('prediction_latency '))).toEqual([]);
  });

  it('an unknown key: the server closes with 4401 and the run aborts after that one connection, failing its thresholds', async () => {
    const env = { BASE_URL: base(), API_KEY: 'not-a-key', MODEL: 'name-gender', INPUT: 'names' };
    const run = await runScript(WS, { env, scenario: 'subscribers', iterations: 20 });
    expect(run.connections).toBe(1);
    expect(run.aborted).toMatch(/refused the key \(close 4401\)/);
    expect(count(run, 'auth_rejected', { reason: 'close 4401' })).toBe(1);
    expect(count(run, 'predictions_completed')).toBe(0);
    expect(await thresholdsFailed(WS, env, run)).toEqual(
      expect.arrayContaining(['predictions_completed count>0', 'auth_rejected count<1', 'checks rate>0.99']),
    );
  });

  it('no key at all is refused the same way', async () => {
    const env = { BASE_URL: base(), MODEL: 'name-gender', INPUT: 'names' };
    const run = await runScript(WS, { env, scenario: 'subscribers', iterations: 20 });
    expect(run.connections).toBe(1);
    expect(run.aborted).toMatch(/close 4401/);
  });

  it("a key without the model's scope (FORBIDDEN) aborts after one connection too", async () => {
    const env = { BASE_URL: base(), API_KEY: KEYS.bob, MODEL: 'name-gender', INPUT: 'names' };
    const run = await runScript(WS, { env, scenario: 'subscribers', iterations: 20 });
    expect(run.connections).toBe(1);
    expect(run.aborted).toMatch(/refused the key \(FORBIDDEN\)/);
    expect(count(run, 'prediction_failures', { reason: 'FORBIDDEN' })).toBe(1);
    expect(await thresholdsFailed(WS, env, run)).toEqual(
      expect.arrayContaining(['predictions_completed count>0', 'auth_rejected count<1']),
    );
  });
});

describe('predict-http.js against the model (items 14, 15)', () => {
  it('varied names are answered by the model; its summary reports the run, p99 included', async () => {
    const env = { BASE_URL: base(), API_KEY: KEYS.alice, MODEL: 'name-gender', INPUT: 'names' };
    const run = await runScript(HTTP, { env, scenario: 'open', iterations: 30 });
    expect(run.errors).toEqual([]);
    expect(count(run, 'predictions_completed', { scenario: 'open' })).toBe(30);
    expect(count(run, 'graphql_errors')).toBe(0);
    const { options } = await loadScript(HTTP, env);
    const data = summaryData(options, run);
    // Only the closed loop (not run here) and possibly the latency SLO may fail.
    expect(failedThresholds(data).filter((t) => !/^http_req_duration/.test(t))).toEqual(['predictions_completed{scenario:closed} count>0']);
    const text = (await callHandleSummary(HTTP, env, data)).stdout;
    expect(text).toMatch(/PASS\s+prediction_cached\s+rate<0\.05/);
    expect(text).toMatch(/PASS\s+predictions_completed\{scenario:open\}\s+count>0\s+\(count=30\.00\)/);
    expect(text).toMatch(/http_req_duration\{scenario:open\}: [\d.]+ \/ [\d.]+ \/ [\d.]+\n/);
  });

  it('one fixed TEXT is answered by the cache, and the cached-share threshold fails the run', async () => {
    const env = { BASE_URL: base(), API_KEY: KEYS.alice, MODEL: 'name-gender', TEXT: 'Maria' };
    const run = await runScript(HTTP, { env, scenario: 'open', iterations: 10 });
    expect(count(run, 'predictions_completed')).toBe(10);
    expect(count(run, 'prediction_cached')).toBeGreaterThanOrEqual(9);
    expect(await thresholdsFailed(HTTP, env, run)).toContain('prediction_cached rate<0.05');
  });

  it('a refused key aborts after the first request instead of hammering 401s', async () => {
    const env = { BASE_URL: base(), API_KEY: 'not-a-key', MODEL: 'name-gender', INPUT: 'names' };
    const run = await runScript(HTTP, { env, scenario: 'closed', iterations: 50 });
    expect(run.requests).toBe(1);
    expect(run.aborted).toMatch(/refused the key \(UNAUTHENTICATED\)/);
    expect(await thresholdsFailed(HTTP, env, run)).toEqual(
      expect.arrayContaining(['predictions_completed{scenario:closed} count>0', 'graphql_errors count<1']),
    );
  });
});
