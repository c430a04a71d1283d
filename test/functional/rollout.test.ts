/**
 * Rolling out versions on a real stack: two API replicas (one in this process, one a child
 * process) and a cpu worker on a private Redis, serving a model `ab` whose versions answer
 * differently on purpose: 2 is 1 with one class's weights negated (some labels flip), 3
 * overflows to infinity on every input (NON_FINITE_OUTPUT). Inputs and weights are multiples
 * of powers of two, so the test computes each version's exact outputs itself.
 *
 * The canary's split, sticky route keys, live changes reaching both replicas, a shadow that
 * changes nothing a client sees while its comparison counts exactly what was mirrored, a gate
 * rolling a failing canary back, promote and rollback, payload capture and its export, and
 * the admin scope every change and every captured payload needs.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { encodeDenseModel } from '../../scripts/models/onnx-writer.ts';
import { mulberry32 } from '../../scripts/models/prng.ts';
import { gql } from '../support/clients.ts';
import { addModel, tempRepository } from '../support/model-repo.ts';
import {
  CLI,
  dropPrefix,
  listeningPort,
  spawnCli,
  startApi,
  startWorker,
  uniquePrefix,
  type Child,
  type RunningApi,
} from '../../harness/stack.ts';
import { until } from '../support/wait.ts';
import { hashApiKey } from '../../server/auth.ts';
import { keyspace } from '../../core/redis/connection.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('rollout');
const MODEL = 'ab';

// Version 1: y = x W + b, 4 -> 3. Version 2: class b's weights negated (about a fifth of the
// labels flip). The biases' odd 512ths keep any two logits apart, so no label is a tie.
const W1 = Float32Array.from({ length: 12 }, (_, i) => (i - 6) / 4);
const W2 = W1.map((w, i) => (i % 3 === 1 ? -w : w));
const B = Float32Array.from([0.5 + 1 / 512, -1 + 2 / 512, 2 + 3 / 512]);
const LABELS = ['a', 'b', 'c'];
const dense = (weight: Float32Array, bias: Float32Array) =>
  encodeDenseModel({
    graphName: 'ab',
    inputName: 'x',
    outputName: 'y',
    softmax: false,
    layers: [{ inFeatures: 4, outFeatures: 3, weight, bias, activation: 'none' }],
  });
// Version 3: a hidden layer that is 3e38 whatever the input, times 10: +Infinity for every input.
const overflowing = encodeDenseModel({
  graphName: 'ab',
  inputName: 'x',
  outputName: 'y',
  softmax: false,
  layers: [
    { inFeatures: 4, outFeatures: 2, weight: new Float32Array(8), bias: Float32Array.from([3e38, 3e38]), activation: 'none' },
    { inFeatures: 2, outFeatures: 3, weight: new Float32Array(6).fill(10), bias: new Float32Array(3), activation: 'none' },
  ],
});

const models = tempRepository();
const CONFIG = {
  pool: 'cpu',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 3] }],
  labels: LABELS,
  scoresKind: 'logits',
  cache: { enabled: false },
  retry: { attempts: 1, backoffMs: 0 },
  rollout: { stable: '1' },
};
addModel(models, MODEL, '1', dense(W1, B), CONFIG);
addModel(models, MODEL, '2', dense(W2, B), CONFIG);
addModel(models, MODEL, '3', overflowing, CONFIG);

const KEYS = { admin: 'admin-key-rollout', user: 'user-key-rollout' };
const opts = {
  redisUrl,
  prefix,
  models,
  env: {
    BATCHLINE_AUTH: 'true',
    BATCHLINE_API_KEYS: `ops:${hashApiKey(KEYS.admin)}:predict:*,admin;app:${hashApiKey(KEYS.user)}:predict:${MODEL}`,
    // Gates are judged when a test asks (runMaintenance), so the test knows which replica logs the rollback.
    BATCHLINE_ROLLOUT_GATES_CRON: '0 0 0 1 1 *',
    BATCHLINE_LOG_REQUESTS: 'errors',
  },
};

let worker: Child;
let inProcess: RunningApi;
let child: Child;
/** The two replicas' GraphQL URLs: [in this process, the child]. */
let urls: [string, string];
let redis: Redis;

beforeAll(async () => {
  worker = await startWorker('cpu', opts);
  inProcess = await startApi(opts);
  child = await spawnCli(['serve', '--port', '0'], { ...opts, env: { ...opts.env, BATCHLINE_HOST: '127.0.0.1' } }, /"msg":"API listening"/);
  urls = [inProcess.url, `http://127.0.0.1:${listeningPort(child)}/graphql`];
  redis = new Redis(redisUrl);
});

afterAll(async () => {
  redis?.disconnect();
  await inProcess?.close();
  await child?.stop();
  await worker?.stop();
  await dropPrefix(redisUrl, prefix);
});

/** Exact logits of a version (float32 inputs and weights are exact here), and their label. */
function answer(weight: Float32Array, x: number[]): { y: number[]; label: string } {
  const y = [0, 1, 2].map((j) => x.reduce((s, xi, i) => s + xi * weight[i * 3 + j], B[j]));
  return { y, label: LABELS[y.indexOf(Math.max(...y))] };
}

/** Rows of 4 values, multiples of 1/8 in [-2, 2]. */
function inputs(n: number, seed: number): number[][] {
  const u = mulberry32(seed);
  return Array.from({ length: n }, () => Array.from({ length: 4 }, () => Math.round((u() * 4 - 2) * 8) / 8));
}

const f32 = (b64: string): number[] => Array.from(new Float32Array(new Uint8Array(Buffer.from(b64, 'base64')).buffer));

interface Predicted {
  version: string;
  label: string;
  outputs: { name: string; base64: string }[];
}

const PREDICT = `query($i: PredictionInput!, $v: String, $r: String) {
  predict(model: "${MODEL}", version: $v, input: $i, routeKey: $r) { version label outputs { name base64 } }
}`;
const tensorInput = (x: number[]) => ({ tensors: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: x }] });

async function predict(
  url: string,
  x: number[] | Record<string, unknown>,
  o: { version?: string; routeKey?: string; header?: string } = {},
): Promise<{ status: number; data?: Predicted; code?: string }> {
  const headers: Record<string, string> = { 'x-api-key': KEYS.user, ...(o.header ? { 'x-batchline-route-key': o.header } : {}) };
  const r = await gql<{ predict: Predicted }>(
    url,
    PREDICT,
    { i: Array.isArray(x) ? tensorInput(x) : x, v: o.version, r: o.routeKey },
    headers,
  );
  return { status: r.status, data: r.body.data?.predict ?? undefined, code: r.body.errors?.[0]?.extensions?.code as string | undefined };
}

/** Runs `fn` over `items`, `concurrency` at a time, answers in order. */
async function pool<T, R>(items: T[], concurrency: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}

async function admin<T = Record<string, unknown>>(url: string, query: string, variables: Record<string, unknown> = {}): Promise<T> {
  const r = await gql<T>(url, query, variables, { 'x-api-key': KEYS.admin });
  if (r.body.errors) throw new Error(`${query}: ${JSON.stringify(r.body.errors)}`);
  return r.body.data!;
}

interface Side {
  version: string;
  requests: number;
  errors: number;
}
interface Comparison {
  kind: string;
  stable: string;
  candidate: string;
  mirrored: number;
  compared: number;
  failed: number;
  shed: number;
  failures: { code: string; count: number }[];
  rows: number;
  agreedRows: number;
  maxAbsDiff: number | null;
  stableSide: Side;
  candidateSide: Side;
}
interface RolloutView {
  source: string;
  revision: number;
  stable: string | null;
  pinnedStable: string | null;
  canary: { version: string; percent: number } | null;
  shadow: { version: string; percent: number } | null;
  lastRollback: { version: string; by: string; gate: string | null; reason: string } | null;
  capture: { percent: number; maxBytes: number; maxEntries: number; ttlSeconds: number };
  comparisons: Comparison[];
}
const ROLLOUT_FIELDS = `source revision stable pinnedStable canary { version percent } shadow { version percent }
  lastRollback { version by gate reason } capture { percent maxBytes maxEntries ttlSeconds }
  comparisons { kind stable candidate mirrored compared failed shed failures { code count } rows agreedRows maxAbsDiff
    stableSide { version requests errors } candidateSide { version requests errors } }`;

async function rollout(url: string): Promise<RolloutView> {
  return (await admin<{ rollout: RolloutView }>(url, `query($m: String!) { rollout(model: $m) { ${ROLLOUT_FIELDS} } }`, { m: MODEL }))
    .rollout;
}

/** Changes the policy on `url` and waits until both replicas run under it (same revision). */
async function setRollout(url: string, policy: Record<string, unknown>): Promise<RolloutView> {
  const set = await admin<{ setRollout: RolloutView }>(
    url,
    `mutation($m: String!, $p: RolloutInput!) { setRollout(model: $m, policy: $p) { ${ROLLOUT_FIELDS} } }`,
    { m: MODEL, p: policy },
  );
  await bothAt(set.setRollout.revision);
  return set.setRollout;
}

async function bothAt(revision: number): Promise<void> {
  for (const url of urls)
    await until(async () => (await rollout(url)).revision === revision, `revision ${revision} of the policy on ${url}`);
}

const comparison = (r: RolloutView, kind: string, candidate: string): Comparison | undefined =>
  r.comparisons.find((c) => c.kind === kind && c.candidate === candidate);

describe('the canary', () => {
  it('gets its 25% of 2,000 requests that name no version, on both replicas, and a named version is served as named', async () => {
    await setRollout(urls[1], { canary: { version: '2', percent: 25 } });
    const xs = inputs(2000, 1);
    const answers = await pool(xs, 48, (x, i) => predict(urls[i % 2], x));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const canary = answers.filter((a) => a.data!.version === '2').length;
    // Binomial(2000, 0.25): mean 500, sd 19.4. Within 4.5 sd (87): a fair split fails this about once in 150,000 runs.
    expect(Math.abs(canary - 500)).toBeLessThanOrEqual(87);
    // Each answer is its version's own.
    answers.forEach((a, i) => expect(a.data!.label).toBe(answer(a.data!.version === '2' ? W2 : W1, xs[i]).label));
    for (const v of ['1', '2']) expect((await predict(urls[0], xs[0], { version: v })).data!.version).toBe(v);
    // Every routed request counts on its side of the pair, over both replicas.
    await until(async () => {
      const c = comparison(await rollout(urls[0]), 'canary', '2');
      return c?.stableSide.requests === 2000 - canary && c.candidateSide.requests === canary;
    }, 'the canary pair to count all 2,000 requests');
    // 2,000 real requests: about 15 s on a quiet 2-core machine; bounded for a busy one.
  }, 180_000);

  it('keeps a route key on one version on both replicas, header or argument, and on the canary as its share grows', async () => {
    const keys = Array.from({ length: 120 }, (_, i) => `user-${i}`);
    const x = inputs(1, 2)[0];
    const placed = async (): Promise<string[]> =>
      pool(keys, 24, async (k) => {
        const byHeader = await predict(urls[0], x, { header: k });
        const byArgument = await predict(urls[1], x, { routeKey: k });
        expect(byArgument.data!.version, k).toBe(byHeader.data!.version);
        return byHeader.data!.version;
      });
    const at25 = await placed();
    // Binomial(120, 0.25): mean 30, sd 4.7; within 4.5 sd.
    expect(Math.abs(at25.filter((v) => v === '2').length - 30)).toBeLessThanOrEqual(21);
    expect(await placed()).toEqual(at25);
    await setRollout(urls[0], { canary: { version: '2', percent: 50 } });
    const at50 = await placed();
    at25.forEach((v, i) => v === '2' && expect(at50[i], keys[i]).toBe('2'));
    expect(at50.filter((v) => v === '2').length).toBeGreaterThan(at25.filter((v) => v === '2').length);
  });

  it('follows a live weight change on both replicas: all of it, then none', async () => {
    const xs = inputs(40, 3);
    await setRollout(urls[1], { canary: { version: '2', percent: 100 } });
    for (const url of urls) expect((await pool(xs, 8, (x) => predict(url, x))).every((a) => a.data!.version === '2')).toBe(true);
    await setRollout(urls[0], { canary: { version: '2', percent: 0 } });
    for (const url of urls) expect((await pool(xs, 8, (x) => predict(url, x))).every((a) => a.data!.version === '1')).toBe(true);
  });
});

describe('the shadow', () => {
  it('changes nothing a client sees, and its comparison counts exactly the mirrored requests', async () => {
    await setRollout(urls[0], { canary: null, shadow: { version: '2', percent: 100, timeoutMs: 30_000 } });
    const xs = inputs(150, 4);
    const answers = await pool(xs, 8, (x, i) => predict(urls[i % 2], x));
    answers.forEach((a, i) => {
      expect(a.status).toBe(200);
      expect(a.data!.version).toBe('1');
      expect(f32(a.data!.outputs[0].base64)).toEqual(answer(W1, xs[i]).y);
    });
    const agree = xs.filter((x) => answer(W1, x).label === answer(W2, x).label).length;
    // Different on purpose: some labels flip, not all.
    expect(agree).toBeGreaterThan(0);
    expect(agree).toBeLessThan(xs.length);
    const maxAbs = Math.max(...xs.flatMap((x) => answer(W1, x).y.map((v, j) => Math.abs(v - answer(W2, x).y[j]))));
    let c: Comparison | undefined;
    await until(
      async () => {
        c = comparison(await rollout(urls[1]), 'shadow', '2');
        return c !== undefined && c.compared + c.failed + c.shed === 150;
      },
      () => `150 settled shadow runs, saw ${JSON.stringify(c)}`,
    );
    expect(c).toMatchObject({ mirrored: 150, compared: 150, failed: 0, shed: 0, rows: 150, agreedRows: agree });
    expect(c!.maxAbsDiff).toBeCloseTo(maxAbs, 5);
    expect(c!.candidateSide).toMatchObject({ version: '2', requests: 150, errors: 0 });
  });

  it('fails where the client never sees it: every run of a broken shadow is counted, no answer is touched', async () => {
    await setRollout(urls[1], { shadow: { version: '3', percent: 100, timeoutMs: 30_000 } });
    const xs = inputs(60, 5);
    const answers = await pool(xs, 8, (x, i) => predict(urls[i % 2], x));
    expect(answers.map((a) => a.status)).toEqual(xs.map(() => 200));
    answers.forEach((a, i) => expect(f32(a.data!.outputs[0].base64)).toEqual(answer(W1, xs[i]).y));
    let c: Comparison | undefined;
    await until(
      async () => {
        c = comparison(await rollout(urls[0]), 'shadow', '3');
        return c !== undefined && c.compared + c.failed + c.shed === 60;
      },
      () => `60 settled runs of the broken shadow, saw ${JSON.stringify(c)}`,
    );
    expect(c).toMatchObject({ mirrored: 60, compared: 0, failed: 60, failures: [{ code: 'NON_FINITE_OUTPUT', count: 60 }] });
    expect(c!.candidateSide).toMatchObject({ requests: 60, errors: 60 });
    await setRollout(urls[0], { shadow: null });
  });
});

describe('gates, promote and rollback', () => {
  it('rolls a failing canary back, saying why in the log, the metrics and the view; its traffic returns to the stable', async () => {
    await setRollout(urls[0], { canary: { version: '3', percent: 50 }, gates: { minRequests: 20, maxErrorRateIncrease: 0.1 } });
    const xs = inputs(80, 6);
    const answers = await pool(xs, 8, (x, i) => predict(urls[i % 2], x));
    // The canary is live traffic: its requests fail as they would (that is what the gate is for).
    for (const a of answers) expect(a.data?.version === '1' || a.code === 'NON_FINITE_OUTPUT').toBe(true);
    const failed = answers.filter((a) => a.code === 'NON_FINITE_OUTPUT').length;
    await until(async () => comparison(await rollout(urls[0]), 'canary', '3')?.candidateSide.requests === failed, 'the canary’s requests');
    const ran = await admin<{ runMaintenance: string }>(urls[1], 'mutation { runMaintenance(task: "rollout-gates") }');
    expect(JSON.parse(ran.runMaintenance)).toEqual([expect.objectContaining({ model: MODEL, version: '3', gate: 'error-rate' })]);
    await until(async () => (await rollout(urls[0])).canary === null, 'the rollback on the other replica');
    const view = await rollout(urls[0]);
    expect(view.lastRollback).toMatchObject({ version: '3', by: 'gate', gate: 'error-rate' });
    expect(view.lastRollback!.reason).toMatch(new RegExp(`canary 3 failed 100.0% of its requests \\(${failed} of ${failed}\\)`));
    // pino writes asynchronously: the child's line reaches its pipe a moment after the answer.
    const logged = /"model":"ab","version":"3","gate":"error-rate".*"msg":"canary rolled back"/;
    await until(() => logged.test(child.output()), 'the rollback’s warning in the replica’s log');
    const metrics = await (await fetch(urls[1].replace('/graphql', '/metrics'))).text();
    expect(metrics).toMatch(/batchline_rollout_rollbacks_total\{[^}]*model="ab",version="3",gate="error-rate"[^}]*\} 1/);
    const stats = await admin<{ serverStats: { models: { name: string; rollout: RolloutView }[] } }>(
      urls[0],
      `{ serverStats { models { name rollout { ${ROLLOUT_FIELDS} } } } }`,
    );
    expect(stats.serverStats.models.find((m) => m.name === MODEL)!.rollout.lastRollback?.gate).toBe('error-rate');
    const after = await pool(inputs(40, 7), 8, (x, i) => predict(urls[i % 2], x));
    expect(after.every((a) => a.data?.version === '1')).toBe(true);
  });

  it('rolls back by an admin’s word with its reason, and promotes a canary to stable on every replica', async () => {
    await setRollout(urls[0], { canary: { version: '2', percent: 10 }, gates: null });
    const rolled = await admin<{ rollback: RolloutView }>(
      urls[1],
      `mutation { rollback(model: "${MODEL}", reason: "pager went off") { ${ROLLOUT_FIELDS} } }`,
    );
    expect(rolled.rollback).toMatchObject({
      canary: null,
      lastRollback: { version: '2', by: 'ops', gate: null, reason: 'pager went off' },
    });
    await setRollout(urls[0], { canary: { version: '2', percent: 10 } });
    const promoted = await admin<{ promote: RolloutView }>(urls[0], `mutation { promote(model: "${MODEL}") { ${ROLLOUT_FIELDS} } }`);
    expect(promoted.promote).toMatchObject({ canary: null, pinnedStable: '2', stable: '2' });
    await bothAt(promoted.promote.revision);
    for (const url of urls) expect((await pool(inputs(20, 8), 8, (x) => predict(url, x))).every((a) => a.data!.version === '2')).toBe(true);
    // Back to what the config.yaml says: version 1.
    const reset = await admin<{ resetRollout: RolloutView }>(urls[1], `mutation { resetRollout(model: "${MODEL}") { ${ROLLOUT_FIELDS} } }`);
    expect(reset.resetRollout).toMatchObject({ source: 'config', revision: 0, stable: '1', canary: null });
    for (const url of urls) await until(async () => (await rollout(url)).source === 'config', `the config policy on ${url}`);
  });
});

describe('payload capture', () => {
  const setCapture = async (capture: Record<string, unknown>) => {
    const r = await admin<{ setCapture: RolloutView }>(
      urls[0],
      `mutation($m: String!, $c: CaptureInput!) { setCapture(model: $m, capture: $c) { ${ROLLOUT_FIELDS} } }`,
      { m: MODEL, c: capture },
    );
    await bothAt(r.setCapture.revision);
  };
  const stream = keyspace(prefix).capture(MODEL);
  /** Captures written and dropped so far, and writes still waiting on Redis, over both replicas (their /metrics). */
  const counted = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const url of urls) {
      const text = await (await fetch(url.replace('/graphql', '/metrics'))).text();
      for (const m of text.matchAll(/^batchline_capture_total\{[^}]*model="ab",outcome="([^"]+)"[^}]*\} (\d+)/gm))
        out[m[1]] = (out[m[1]] ?? 0) + Number(m[2]);
      out.pending = (out.pending ?? 0) + Number(/^batchline_capture_pending\{[^}]*\} (\d+)/m.exec(text)?.[1] ?? NaN);
    }
    return out;
  };

  it('writes about its 10% of requests, which export as JSON lines whose inputs give the same outputs again', async () => {
    await setCapture({ percent: 10 });
    const xs = inputs(1000, 9);
    await pool(xs, 48, (x, i) => predict(urls[i % 2], x));
    let written = 0;
    await until(async () => {
      const c = await counted();
      written = c.written ?? 0;
      return c.pending === 0 && (await redis.xlen(stream)) === written;
    }, 'the captures to land');
    // Binomial(1000, 0.1): mean 100, sd 9.5; within 4.5 sd.
    expect(Math.abs(written - 100)).toBeLessThanOrEqual(42);
    expect(await redis.ttl(stream)).toBeGreaterThan(0);
    const { stdout, stderr } = await promisify(execFile)(
      process.execPath,
      [CLI, 'capture', 'export', '--model', MODEL, '--format', 'jsonl'],
      {
        env: { ...process.env, BATCHLINE_REDIS_URL: redisUrl, BATCHLINE_REDIS_PREFIX: prefix },
      },
    );
    const events = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown> & { data: { input: Record<string, unknown>; outputs: { base64: string }[] } });
    expect(stderr).toBe(`exported ${written} captured requests of ${MODEL}\n`);
    expect(events).toHaveLength(written);
    for (const e of events) {
      expect(e).toMatchObject({ specversion: '1.0', type: 'io.batchline.inference.capture', model: MODEL, modelversion: '1' });
      expect(typeof e.requestid).toBe('string');
      expect(e.data.input).toMatchObject({ tensors: [{ name: 'x', datatype: 'FP32', shape: [1, 4] }] });
    }
    const again = await pool(events, 8, (e) => predict(urls[0], e.data.input, { version: e.modelversion as string }));
    again.forEach((a, i) => expect(a.data!.outputs[0].base64).toBe(events[i].data.outputs[0].base64));
  }, 120_000);

  it('keeps to its length cap and its byte limit, drops what it cannot write and counts it, and switches off', async () => {
    const node = Number(((await redis.config('GET', 'stream-node-max-entries')) as string[])[1]);
    await setCapture({ percent: 100, maxEntries: 50 });
    const total = async (): Promise<number> => {
      const { pending, ...outcomes } = await counted();
      return pending === 0 ? Object.values(outcomes).reduce((a, b) => a + b, 0) : NaN;
    };
    const before = await total();
    await pool(inputs(300, 10), 16, (x, i) => predict(urls[i % 2], x));
    await until(async () => (await total()) === before + 300, 'every one of 300 requests captured or counted as dropped');
    // MAXLEN ~ trims whole stream nodes: the stream holds its cap, and at most one node more.
    await until(async () => (await redis.xlen(stream)) <= 50 + node, `the stream trimmed to 50 (+ one node of ${node})`);
    await setCapture({ maxBytes: 100 });
    const was = await redis.xlen(stream);
    await pool(inputs(20, 11), 8, (x, i) => predict(urls[i % 2], x));
    await until(async () => ((await counted())['too-large'] ?? 0) === 20, '20 captures dropped as too large');
    expect(await redis.xlen(stream)).toBe(was);
    await setCapture({ percent: 0, maxBytes: 65_536 });
    const off = await counted();
    expect(off.pending).toBe(0);
    await pool(inputs(20, 12), 8, (x, i) => predict(urls[i % 2], x));
    expect(await counted()).toEqual(off);
  });
});

describe('who may do it', () => {
  it('refuses every change and every captured payload to a key without admin, and lets it read the policy', async () => {
    const user = { 'x-api-key': KEYS.user };
    const asUser = (query: string) => gql(urls[0], query, {}, user);
    for (const query of [
      `mutation { setRollout(model: "${MODEL}", policy: { canary: { version: "2", percent: 5 } }) { revision } }`,
      `mutation { promote(model: "${MODEL}", version: "2") { revision } }`,
      `mutation { rollback(model: "${MODEL}") { revision } }`,
      `mutation { setCapture(model: "${MODEL}", capture: { percent: 0 }) { revision } }`,
      `mutation { resetRollout(model: "${MODEL}") { revision } }`,
      `{ capturedPayloads(model: "${MODEL}") { payloads { event } } }`,
    ]) {
      const r = await asUser(query);
      expect(r.status, query).toBe(403);
      expect(r.body.errors?.[0]?.extensions?.code, query).toBe('FORBIDDEN');
    }
    const read = await asUser(`{ rollout(model: "${MODEL}") { stable } }`);
    expect(read.body).toEqual({ data: { rollout: { stable: '1' } } });
    expect((await gql(urls[1], `{ rollout(model: "${MODEL}") { stable } }`)).status).toBe(401);
    const captured = await admin<{ capturedPayloads: { payloads: { event: string; version: string }[] } }>(
      urls[1],
      `{ capturedPayloads(model: "${MODEL}", limit: 5) { payloads { version event } next } }`,
    );
    expect(captured.capturedPayloads.payloads).toHaveLength(5);
    expect(JSON.parse(captured.capturedPayloads.payloads[0].event)).toMatchObject({ specversion: '1.0', model: MODEL });
  });

  it('refuses a policy that names a version the model lacks, or a canary that is the stable, naming the field', async () => {
    const set = (p: string) =>
      gql(urls[0], `mutation { setRollout(model: "${MODEL}", policy: ${p}) { revision } }`, {}, { 'x-api-key': KEYS.admin });
    const missing = await set('{ canary: { version: "9", percent: 5 } }');
    expect(missing.status).toBe(400);
    expect(missing.body.errors![0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT', field: 'policy.canary.version' } });
    const same = await set('{ canary: { version: "1", percent: 5 } }');
    expect(same.body.errors![0]).toMatchObject({ message: 'policy.canary.version: is the stable version (1)' });
    const over = await set('{ shadow: { version: "2", percent: 101 } }');
    expect(over.body.errors![0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT', field: 'policy.shadow.percent' } });
  });
});
