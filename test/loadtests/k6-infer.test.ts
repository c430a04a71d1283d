/**
 * The inference protocol's k6 scripts against a real batchline (issue 25): infer-rest.js, binary
 * and JSON, and infer-grpc.js through k6/net/grpc, each a few iterations of each scenario on one
 * VU of the k6 stand-in (test/support/k6, whose grpc module drives @grpc/grpc-js with the same
 * .proto). Every iteration completes a prediction and no threshold but the latency SLOs (not
 * judged here) fails; a refused key aborts the run after one request. No timing is judged.
 */
import { describe, expect, inject, it } from 'vitest';
import { hashApiKey } from '../../server/auth.ts';
import { loadScript, runScript, type Run } from '../support/k6/host.ts';
import { failedThresholds, summaryData } from '../support/k6/thresholds.ts';
import { uniquePrefix } from '../../harness/stack.ts';
import { useStack } from '../support/use-stack.ts';

const redisUrl = inject('redisUrl');
const KEY = 'k6-infer-0a1b2c3d4e5f';
const stack = useStack(
  {
    redisUrl,
    prefix: uniquePrefix('k6-infer'),
    env: { BATCHLINE_AUTH: 'true', BATCHLINE_API_KEYS: `k6:${hashApiKey(KEY)}:predict:*` },
    grpc: true,
  },
  ['cpu'],
);

const DIR = new URL('../../loadtests/', import.meta.url).pathname;
const REST = `${DIR}infer-rest.js`;
const GRPC = `${DIR}infer-grpc.js`;

const base = () => stack.api.url.replace(/\/graphql$/, '');
const count = (run: Run, metric: string) => run.samples.filter((s) => s.metric === metric).reduce((a, s) => a + s.value, 0);
/** Failed thresholds, less the latency SLOs, which these runs do not judge. */
async function failed(script: string, env: Record<string, string>, runs: Run[]): Promise<string[]> {
  const all: Run = { ...runs[0], samples: runs.flatMap((r) => r.samples) };
  return (await failedThresholds(summaryData((await loadScript(script, env)).options, all))).filter((t) => !/_duration/.test(t));
}

describe('infer-rest.js', () => {
  it.each(['binary', 'json'])('ENCODING=%s: every iteration of both scenarios completes a prediction on spam-mlp', async (encoding) => {
    const env = { BASE_URL: base(), API_KEY: KEY, MODEL: 'spam-mlp', INPUT_NAME: 'features', ROW_WIDTH: '64', ENCODING: encoding };
    const runs = [
      await runScript(REST, { env, scenario: 'closed', iterations: 4 }),
      await runScript(REST, { env, scenario: 'open', iterations: 4 }),
    ];
    for (const run of runs) {
      expect(run.errors).toEqual([]);
      expect(count(run, 'predictions_completed')).toBe(4);
      expect(count(run, 'infer_errors')).toBe(0);
    }
    expect(await failed(REST, env, runs)).toEqual([]);
  });

  it('a refused key aborts the run after one request', async () => {
    const env = { BASE_URL: base(), API_KEY: 'wrong', MODEL: 'spam-mlp', INPUT_NAME: 'features', ROW_WIDTH: '64' };
    const run = await runScript(REST, { env, scenario: 'closed', iterations: 10 });
    expect(run.requests).toBe(1);
    expect(run.aborted).toMatch(/refused the key \(HTTP 401\)/);
  });
});

describe('infer-grpc.js', () => {
  it('every iteration of both scenarios completes a prediction over one connection', async () => {
    const env = { GRPC_ADDR: stack.api.grpc!, API_KEY: KEY, MODEL: 'spam-mlp', INPUT_NAME: 'features', ROW_WIDTH: '64' };
    const runs = [
      await runScript(GRPC, { env, scenario: 'closed', iterations: 4 }),
      await runScript(GRPC, { env, scenario: 'open', iterations: 4 }),
    ];
    for (const run of runs) {
      expect(run.errors).toEqual([]);
      expect(run.connections).toBe(1);
      expect(count(run, 'predictions_completed')).toBe(4);
      expect(count(run, 'infer_errors')).toBe(0);
    }
    expect(await failed(GRPC, env, runs)).toEqual([]);
  });

  it('a refused key aborts the run after one call', async () => {
    const env = { GRPC_ADDR: stack.api.grpc!, API_KEY: 'wrong', MODEL: 'spam-mlp', INPUT_NAME: 'features', ROW_WIDTH: '64' };
    const run = await runScript(GRPC, { env, scenario: 'closed', iterations: 10 });
    expect(run.requests).toBe(1);
    expect(run.aborted).toMatch(/refused the key \(gRPC status 16\)/);
  });
});
