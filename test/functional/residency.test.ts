/**
 * Residency under a model memory budget (docs/RESIDENCY.md), on the real stack: 12 models of
 * 4 MiB files (up to about 8 MiB each as measured: onnxruntime keeps a packed copy of the
 * weights; a reload into pages an eviction freed reads less) with a budget of 30 MiB, room for 3
 * to 7 of them (one pinned), a version larger than the whole
 * budget, and a worker whose pinned versions alone exceed it. Every answer is checked against
 * onnxruntime run in this process on the same input. No timing is asserted: counts and answers.
 */
import { Redis } from 'ioredis';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { encodeDenseModel } from '../../scripts/models/onnx-writer.ts';
import { gql } from '../support/clients.ts';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { addModel, linearOnnx, LINEAR_CONFIG, LINEAR_BIAS, tempRepository } from '../support/model-repo.ts';
import { until } from '../support/wait.ts';
import { dropPrefix, startApi, startWorker, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import type { WorkerEntry } from '../../core/control/worker-registry.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('residency');
const WIDTH = 1024;
const BUDGET = 30 * 1024 * 1024;
const MODELS = 12;
const names = Array.from({ length: MODELS }, (_, i) => `m${String(i).padStart(2, '0')}`);

/** A WIDTH x WIDTH dense layer (4 MiB of weights), different for each `seed`. */
function dense(seed: number, width = WIDTH): Uint8Array {
  return encodeDenseModel({
    graphName: `g${seed}`,
    inputName: 'x',
    outputName: 'y',
    softmax: false,
    layers: [
      {
        inFeatures: width,
        outFeatures: width,
        weight: Float32Array.from({ length: width * width }, (_, j) => (((j * 7 + seed * 3) % 17) - 8) / 64),
        bias: Float32Array.from({ length: width }, (_, j) => seed + j / width),
        activation: 'none',
      },
    ],
  });
}

const config = (width = WIDTH, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  pool: 'cpu',
  task: 'raw',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, width] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, width] }],
  cache: { enabled: false },
  retry: { attempts: 2, backoffMs: 0 },
  ...extra,
});

const models = tempRepository();
const files = new Map<string, string>();
names.forEach((n, i) => files.set(n, addModel(models, n, '1', dense(i), config(WIDTH, i === 0 ? { residency: { pinned: true } } : {}))));
// 3072 x 3072: 36 MiB of weights, over the 30 MiB budget.
addModel(models, 'big', '1', dense(99, 3072), config(3072));
addModel(models, 'lin', '1', linearOnnx(), LINEAR_CONFIG);

const env = {
  BATCHLINE_WORKER_MODEL_MEMORY: String(BUDGET),
  BATCHLINE_WORKER_THREADS: '1',
  BATCHLINE_WORKER_CONCURRENCY: '8',
  BATCHLINE_POLL_MODELS_CRON: '* * * * * *',
  // At most 8 loads a second: back-to-back loads (concurrent cold requests) wait for it.
  BATCHLINE_WORKER_MAX_MODEL_LOADS: '8',
};
const opts = { redisUrl, prefix, models, env };
let api: RunningApi;
let worker: Child;
const sessions = new Map<string, ort.InferenceSession>();

beforeAll(async () => {
  worker = await startWorker('cpu', opts);
  api = await startApi(opts);
  for (const [n, path] of files) sessions.set(n, await ort.InferenceSession.create(path));
});

afterAll(async () => {
  await api?.close();
  await worker?.stop();
  for (const s of sessions.values()) await s.release();
  await dropPrefix(redisUrl, prefix);
});

const PREDICT =
  'query($m: String!, $x: [Float!]!) { predict(model: $m, input: { tensors: [{ name: "x", shape: [1, 1024], datatype: "FP32", data: $x }] }) { outputs { data } timings { coldStartMs } } }';

interface Answer {
  predict: { outputs: { data: number[] }[]; timings: { coldStartMs: number } } | null;
}

function inputFor(model: string, n: number): number[] {
  return Array.from({ length: WIDTH }, (_, j) => (((j + n * 13 + model.length) % 11) - 5) / 8);
}

async function expected(model: string, x: number[]): Promise<Float32Array> {
  const out = await sessions.get(model)!.run({ x: new ort.Tensor('float32', Float32Array.from(x), [1, WIDTH]) });
  return out.y.data as Float32Array;
}

/** Asks `model` and checks the answer against onnxruntime in this process; returns the answer's coldStartMs. */
async function askAndCheck(model: string, n: number): Promise<number> {
  const x = inputFor(model, n);
  const r = await gql<Answer>(api.url, PREDICT, { m: model, x });
  expect(r.body.errors, `${model} #${n}`).toBeUndefined();
  const got = r.body.data!.predict!.outputs[0].data;
  const want = await expected(model, x);
  expect(got.length).toBe(WIDTH);
  for (let j = 0; j < WIDTH; j++) expect(Math.abs(got[j] - want[j]), `${model}[${j}]`).toBeLessThan(1e-3 * Math.max(1, Math.abs(want[j])));
  return r.body.data!.predict!.timings.coldStartMs;
}

async function entry(): Promise<WorkerEntry> {
  const r = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    const all = Object.values(await r.hgetall(`${prefix}:workers`)).map((j) => JSON.parse(j) as WorkerEntry);
    expect(all).toHaveLength(1);
    return all[0];
  } finally {
    r.disconnect();
  }
}

describe('residency under a model memory budget', () => {
  it('serves 12 models round-robin with a budget for a few: every answer right, never over budget, evictions counted, the pinned one kept', async () => {
    const start = await entry();
    // Only the pinned version is loaded at start; every version is served.
    expect(start.residency!.budgetBytes).toBe(BUDGET);
    expect(start.residency!.resident.map((r) => r.key)).toEqual(['m00@1']);
    expect(start.models).toHaveLength(MODELS + 2);

    let cold = 0;
    for (let pass = 0; pass < 2; pass++) for (const m of names) if ((await askAndCheck(m, pass)) > 0) cold++;
    const after = await entry();
    const res = after.residency!;
    // 11 unpinned models cycled through room for a few beside the pinned one: each of their requests loaded it,
    // and every load is either still resident or was evicted.
    expect(cold).toBeGreaterThanOrEqual(2 * (MODELS - 1));
    expect(res.loads).toBeGreaterThanOrEqual(2 * (MODELS - 1) + 1);
    expect(res.evictions).toBe(res.loads - res.resident.length);
    // Each counts at least its 4 MiB file, so at most 7 fit in 30 MiB.
    expect(res.resident.length).toBeLessThanOrEqual(7);
    expect(res.peakBytes).toBeLessThanOrEqual(BUDGET);
    expect(res.usedBytes).toBeLessThanOrEqual(BUDGET);
    expect(res.resident.find((r) => r.key === 'm00@1')?.pinned).toBe(true);
    // Each version's cost is measured, and at least its 4 MiB file.
    for (const r of res.resident) expect(r.bytes).toBeGreaterThanOrEqual(WIDTH * WIDTH * 4);

    // The models query says the same: which workers hold what, measured sizes, the pinned one.
    const q = await gql<{
      models: { name: string; residency: { pinned: boolean; loadedOn: string[]; residentBytes: number | null; loads: number } }[];
    }>(api.url, '{ models { name residency { pinned loadedOn residentBytes lastLoadMs loads } } }');
    expect(q.body.errors).toBeUndefined();
    const byName = new Map(q.body.data!.models.map((m) => [m.name, m.residency]));
    expect(byName.get('m00')).toMatchObject({ pinned: true, loadedOn: [after.id] });
    const held = [...byName].filter(([, r]) => r.loadedOn.length > 0).map(([n]) => `${n}@1`);
    expect(held.sort()).toEqual(res.resident.map((r) => r.key).sort());
    for (const [, r] of byName) expect(r.residentBytes === null).toBe(r.loadedOn.length === 0);
    // Loads per version add up to the worker's count: the pinned one once, each other at least once a pass.
    expect([...byName.values()].reduce((a, r) => a + r.loads, 0)).toBe(res.loads);
    expect(byName.get('m00')!.loads).toBe(1);
    for (const m of names.slice(1)) expect(byName.get(m)!.loads).toBeGreaterThanOrEqual(2);
  });

  it('answers concurrent skewed traffic over all 12 right: a version with work in flight or in a batch is never evicted', async () => {
    // Zipf-like: model i gets about 12 / (i + 1) requests, all sent at once.
    const asks: Promise<number>[] = [];
    names.forEach((m, i) => {
      for (let n = 0; n < Math.ceil(12 / (i + 1)); n++) asks.push(askAndCheck(m, 10 + n));
    });
    await Promise.all(asks);
    // Cold requests for several versions at once: their loads queued back to back, and the cap spaced them (and said so).
    expect(worker.output()).toMatch(/"msg":"model loads capped: the versions asked for do not fit the model memory budget together/);
    // Jobs whose version waited behind other loads went back to the queue instead of holding a slot, and came back to be answered.
    await until(async () => (await entry()).residency!.deferredJobs! > 0, 'the heartbeat to report deferred jobs', 15_000);
    const res = (await entry()).residency!;
    expect(res.peakBytes).toBeLessThanOrEqual(BUDGET);
    expect(res.resident.some((r) => r.key === 'm00@1')).toBe(true);
  });

  it('refuses a version larger than the whole budget with MODEL_TOO_LARGE naming the sizes, and keeps serving the others', async () => {
    const x = Array.from({ length: 3072 }, () => 1);
    const r = await gql<Answer>(
      api.url,
      'query($x: [Float!]!) { predict(model: "big", input: { tensors: [{ name: "x", shape: [1, 3072], datatype: "FP32", data: $x }] }) { outputs { data } } }',
      { x },
    );
    expect(r.status).toBe(507);
    expect(r.body.errors?.[0].extensions?.code).toBe('MODEL_TOO_LARGE');
    expect(r.body.errors?.[0].message).toMatch(
      /big@1 needs 36\.\d MiB resident, more than the 30\.0 MiB of the worker's whole model memory budget/,
    );
    await askAndCheck('m05', 99);
    expect((await entry()).residency!.resident.some((e) => e.key === 'big@1')).toBe(false);
  });

  it('serves a new version dropped into the repository while the old one is resident, and still the old one by name', async () => {
    const LIN =
      'query($v: String) { predict(model: "lin", version: $v, input: { tensors: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 1, 1, 1] }] }) { version outputs { data } } }';
    type Lin = { predict: { version: string; outputs: { data: number[] }[] } };
    const v1 = await gql<Lin>(api.url, LIN, {});
    expect(v1.body.data!.predict.version).toBe('1');
    expect((await entry()).residency!.resident.some((r) => r.key === 'lin@1')).toBe(true);
    // Version 2: every weight doubled, written then renamed as a deployment would.
    const dir = join(models, 'lin', '2');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'model.onnx.tmp'),
      encodeDenseModel({
        graphName: 'linear',
        inputName: 'x',
        outputName: 'y',
        softmax: false,
        layers: [
          {
            inFeatures: 4,
            outFeatures: 3,
            weight: Float32Array.from({ length: 12 }, (_, i) => (i - 6) / 2),
            bias: LINEAR_BIAS,
            activation: 'none',
          },
        ],
      }),
    );
    renameSync(join(dir, 'model.onnx.tmp'), join(dir, 'model.onnx'));
    await until(async () => {
      const r = await gql<{ models: { name: string; version: string; ready: boolean }[] }>(api.url, '{ models { name version ready } }');
      return r.body.data!.models.some((m) => m.name === 'lin' && m.version === '2' && m.ready);
    }, 'version 2 to be served');
    const v2 = await gql<Lin>(api.url, LIN, {});
    expect(v2.body.errors).toBeUndefined();
    expect(v2.body.data!.predict.version).toBe('2');
    // x = ones: y = column sums of W plus b; W doubled moves y by the column sums of the old W.
    const colSums = [0, 1, 2].map((o) => [0, 1, 2, 3].reduce((a, k) => a + (k * 3 + o - 6) / 4, 0));
    expect(v1.body.data!.predict.outputs[0].data).toEqual(colSums.map((c, o) => c + LINEAR_BIAS[o]));
    expect(v2.body.data!.predict.outputs[0].data).toEqual(colSums.map((c, o) => 2 * c + LINEAR_BIAS[o]));
    const old = await gql<Lin>(api.url, LIN, { v: '1' });
    expect(old.body.data!.predict.outputs[0].data).toEqual(v1.body.data!.predict.outputs[0].data);
    const res = (await entry()).residency!;
    expect(res.resident.some((r) => r.key === 'lin@2')).toBe(true);
    expect(res.peakBytes).toBeLessThanOrEqual(BUDGET);
  });

  it('a worker whose pinned versions alone exceed the budget refuses to start, naming them', async () => {
    const pinnedRepo = tempRepository();
    for (const n of ['p1', 'p2', 'p3', 'p4']) addModel(pinnedRepo, n, '1', dense(7), config(WIDTH, { residency: { pinned: true } }));
    const p = uniquePrefix('residency-pinned');
    const small = { ...env, BATCHLINE_WORKER_MODEL_MEMORY: String(14 * 1024 * 1024) };
    const failed = await startWorker('cpu', { redisUrl, prefix: p, models: pinnedRepo, env: small }).then(
      async (w) => {
        await w.stop();
        return 'started';
      },
      (e: Error) => e.message,
    );
    await dropPrefix(redisUrl, p);
    expect(failed).toMatch(/pinned model versions need at least 16\.0 MiB, over the model memory budget of 14\.0 MiB/);
    for (const n of ['p1', 'p2', 'p3', 'p4']) expect(failed).toContain(`${n}@1`);
  });
});
