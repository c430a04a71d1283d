/**
 * A worker SIGKILLed while it loads a model version on demand (under a model memory budget):
 * the job it took runs on another worker, which loads the version itself, and is answered
 * once, right (checked against onnxruntime in this process). docs/RESIDENCY.md.
 */
import { Redis } from 'ioredis';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { encodeDenseModel } from '../../scripts/models/onnx-writer.ts';
import { gql } from '../support/clients.ts';
import { addModel, tempRepository } from '../support/model-repo.ts';
import { dropPrefix, startApi, startWorker, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('residency-kill');
// 64 MiB of weights: its load (and the first load's one-time onnxruntime setup before it)
// outlasts the test's reaction to the worker's "loading" line by far.
const WIDTH = 4096;
const models = tempRepository();
const path = addModel(
  models,
  'wide',
  '1',
  encodeDenseModel({
    graphName: 'wide',
    inputName: 'x',
    outputName: 'y',
    softmax: false,
    layers: [
      {
        inFeatures: WIDTH,
        outFeatures: 8,
        weight: Float32Array.from({ length: WIDTH * 8 }, (_, j) => ((j % 29) - 14) / 256),
        bias: Float32Array.from({ length: 8 }, (_, j) => j),
        activation: 'none',
      },
      {
        inFeatures: 8,
        outFeatures: WIDTH * 2,
        weight: Float32Array.from({ length: 8 * WIDTH * 2 }, (_, j) => ((j % 31) - 15) / 64),
        bias: new Float32Array(WIDTH * 2),
        activation: 'none',
      },
      {
        inFeatures: WIDTH * 2,
        outFeatures: WIDTH / 2,
        weight: Float32Array.from({ length: WIDTH * WIDTH }, (_, j) => ((j % 37) - 18) / 4096),
        bias: new Float32Array(WIDTH / 2),
        activation: 'none',
      },
    ],
  }),
  {
    pool: 'cpu',
    task: 'raw',
    inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, WIDTH] }],
    outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, WIDTH / 2] }],
    cache: { enabled: false },
    retry: { attempts: 3, backoffMs: 0 },
  },
);
const env = { BATCHLINE_WORKER_MODEL_MEMORY: String(512 * 1024 * 1024), BATCHLINE_WORKER_THREADS: '1', BATCHLINE_LOCK_DURATION_MS: '2000' };
const opts = { redisUrl, prefix, models, env };
let api: RunningApi;
let listener: Redis;
const published = new Map<string, number>();
const workers: Child[] = [];

beforeAll(async () => {
  listener = new Redis(redisUrl);
  await listener.psubscribe(`${prefix}:result:*`);
  listener.on('pmessage', (_p, channel) => {
    const id = channel.slice(`${prefix}:result:`.length);
    published.set(id, (published.get(id) ?? 0) + 1);
  });
  api = await startApi(opts);
});

afterAll(async () => {
  await api?.close();
  await Promise.all(workers.map((w) => w.kill()));
  listener?.disconnect();
  await dropPrefix(redisUrl, prefix);
});

describe('a worker killed during a load', () => {
  it('its job runs on another worker, which loads the version, and is answered once and right', async () => {
    const first = await startWorker('cpu', opts);
    workers.push(first);
    const x = Array.from({ length: WIDTH }, (_, j) => Math.sin(j) / 2);
    const s = await gql<{ submitPrediction: { id: string } }>(
      api.url,
      'mutation($x: [Float!]!) { submitPrediction(model: "wide", input: { tensors: [{ name: "x", shape: [1, 4096], datatype: "FP32", data: $x }] }) { id } }',
      { x },
    );
    expect(s.body.errors).toBeUndefined();
    const id = s.body.data!.submitPrediction.id;
    await until(() => /"msg":"loading model version"/.test(first.output()), 'the first worker to start loading');
    await first.kill('SIGKILL');
    // Killed mid-load: nothing was answered, and it never logged the load's end.
    expect(published.has(id)).toBe(false);
    expect(first.output()).not.toMatch(/"msg":"model version loaded"/);

    const second = await startWorker('cpu', opts);
    workers.push(second);
    await until(() => published.has(id), 'the answer from the second worker');
    expect(second.output()).toMatch(/"model":"wide@1"[^\n]*"msg":"model version loaded"/);
    // A deliberate sleep, to prove a negative: a duplicate would come within a lock period.
    await new Promise((r) => setTimeout(r, 2500));
    expect(published.get(id)).toBe(1);

    const r = await gql<{ prediction: { status: string; result: { outputs: { data: number[] }[] } } }>(
      api.url,
      'query($id: ID!) { prediction(id: $id) { status result { outputs { data } } } }',
      { id },
    );
    expect(r.body.data!.prediction.status).toBe('COMPLETED');
    const session = await ort.InferenceSession.create(path);
    const want = (await session.run({ x: new ort.Tensor('float32', Float32Array.from(x), [1, WIDTH]) })).y.data as Float32Array;
    await session.release();
    const got = r.body.data!.prediction.result.outputs[0].data;
    expect(got).toHaveLength(WIDTH / 2);
    for (let j = 0; j < got.length; j++) expect(Math.abs(got[j] - want[j])).toBeLessThan(1e-3 * Math.max(1, Math.abs(want[j])));
  });
});
