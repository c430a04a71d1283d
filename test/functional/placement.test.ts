/**
 * Placement by model under a memory budget (`queue.placement: model`, docs/RESIDENCY.md), on
 * the real stack: two API replicas and two workers, the pool's queue in 4 lanes. Work for a
 * version goes to its lane, so each version is loaded by one worker, whichever API took the
 * request; a lane with a backlog gets the second worker too. Answers are checked, and no
 * timing is asserted.
 */
import { Redis } from 'ioredis';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { encodeDenseModel } from '../../scripts/models/onnx-writer.ts';
import { gql } from '../support/clients.ts';
import { addModel, linearOnnx, LINEAR_BIAS, LINEAR_CONFIG, LINEAR_WEIGHT, tempRepository } from '../support/model-repo.ts';
import { dropPrefix, startApi, startWorker, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import { shardOf } from '../../core/prediction/queues.ts';
import type { WorkerEntry } from '../../core/control/worker-registry.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('placement');
const LANES = 4;
const models = tempRepository();
const names = Array.from({ length: 8 }, (_, i) => `lin${i}`);
// The same linear graph under 8 names: what differs is where each lands.
for (const n of names) addModel(models, n, '1', linearOnnx(), LINEAR_CONFIG);
const WIDTH = 1024;
const hotPath = addModel(
  models,
  'hot',
  '1',
  encodeDenseModel({
    graphName: 'hot',
    inputName: 'x',
    outputName: 'y',
    softmax: false,
    layers: [
      {
        inFeatures: WIDTH,
        outFeatures: WIDTH,
        weight: Float32Array.from({ length: WIDTH * WIDTH }, (_, j) => ((j % 19) - 9) / 128),
        bias: new Float32Array(WIDTH),
        activation: 'none',
      },
    ],
  }),
  {
    ...LINEAR_CONFIG,
    inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, WIDTH] }],
    outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, WIDTH] }],
  },
);
const env = {
  BATCHLINE_WORKER_MODEL_MEMORY: String(256 * 1024 * 1024),
  BATCHLINE_WORKER_THREADS: '1',
  BATCHLINE_INTRA_OP_THREADS: '1',
  BATCHLINE_WORKER_CONCURRENCY: '2',
  BATCHLINE_QUEUE_SHARDS_CPU: String(LANES),
  BATCHLINE_QUEUE_PLACEMENT: 'model',
};
const opts = { redisUrl, prefix, models, env };
const apis: RunningApi[] = [];
const workers: Child[] = [];

beforeAll(async () => {
  workers.push(await startWorker('cpu', opts), await startWorker('cpu', opts));
  apis.push(await startApi(opts), await startApi(opts));
});

afterAll(async () => {
  await Promise.all(apis.map((a) => a.close()));
  await Promise.all(workers.map((w) => w.stop()));
  await dropPrefix(redisUrl, prefix);
});

async function entries(): Promise<WorkerEntry[]> {
  const r = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    return Object.values(await r.hgetall(`${prefix}:workers`)).map((j) => JSON.parse(j) as WorkerEntry);
  } finally {
    r.disconnect();
  }
}

const LIN =
  'query($m: String!) { predict(model: $m, input: { tensors: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] }) { outputs { data } } }';
const linExpected = [0, 1, 2].map((o) => [1, 2, 3, 4].reduce((a, x, k) => a + x * LINEAR_WEIGHT[k * 3 + o], LINEAR_BIAS[o]));

describe('placement by model', () => {
  it('the two workers split the lanes between them, and each version is loaded by one worker whichever API took its requests', async () => {
    await until(async () => {
      const e = await entries();
      return e.length === 2 && e.every((w) => w.lanes !== undefined);
    }, 'both workers to announce their lanes');
    await until(async () => {
      const lanes = (await entries()).flatMap((w) => w.lanes!);
      return lanes.length === LANES && new Set(lanes).size === LANES;
    }, 'every lane consumed by exactly one worker');

    for (let round = 0; round < 3; round++)
      for (const [i, m] of names.entries()) {
        const r = await gql<{ predict: { outputs: { data: number[] }[] } }>(apis[(i + round) % 2].url, LIN, { m });
        expect(r.body.errors, m).toBeUndefined();
        expect(r.body.data!.predict.outputs[0].data).toEqual(linExpected);
      }
    const e = await entries();
    for (const m of names) {
      const holders = e.filter((w) => w.residency!.resident.some((r) => r.key === `${m}@1`));
      expect(holders, m).toHaveLength(1);
      // ... the worker that consumes the version's lane.
      expect(holders[0].lanes).toContain(shardOf(`${m}@1`, LANES));
    }
    // Each version was loaded once in all: no worker loaded what the other holds.
    expect(e.reduce((a, w) => a + w.residency!.loads, 0)).toBe(names.length);
  });

  it('a lane with a backlog gets the second worker, and every job is answered once and right', async () => {
    const lane = shardOf('hot@1', LANES);
    const x = Float32Array.from({ length: 64 * WIDTH }, (_, j) => Math.cos(j) / 4);
    const base64 = Buffer.from(x.buffer).toString('base64');
    const JOBS = 300;
    // The workers are stopped while the submissions arrive, so the backlog is there, whole, at
    // their first placement round after they resume: however fast this machine drains it, the
    // hot-model rule sees it (coalesced submissions make fewer, larger jobs that a quick worker
    // could otherwise finish before any round counted them).
    for (const w of workers) w.proc.kill('SIGSTOP');
    let submitted: Awaited<ReturnType<typeof gql<{ submitPrediction: { id: string } }>>>[];
    try {
      submitted = await Promise.all(
        Array.from({ length: JOBS }, (_, n) =>
          gql<{ submitPrediction: { id: string } }>(
            apis[n % 2].url,
            'mutation($i: PredictionInput!) { submitPrediction(model: "hot", input: $i) { id } }',
            { i: { tensors: [{ name: 'x', shape: [64, WIDTH], datatype: 'FP32', base64 }] } },
          ),
        ),
      );
    } finally {
      for (const w of workers) w.proc.kill('SIGCONT');
    }
    const ids = submitted.map((s) => {
      expect(s.body.errors).toBeUndefined();
      return s.body.data!.submitPrediction.id;
    });
    // Every id hashes to the version's lane, so a cancel or a poll finds the job from the id alone.
    expect(ids.every((id) => shardOf(id, LANES) === lane)).toBe(true);
    await until(async () => (await entries()).filter((w) => w.lanes!.includes(lane)).length === 2, 'both workers on the hot lane');

    const status = async (id: string): Promise<string> =>
      (await gql<{ prediction: { status: string } }>(apis[0].url, 'query($id: ID!) { prediction(id: $id) { status } }', { id })).body.data!
        .prediction.status;
    await until(async () => (await status(ids[ids.length - 1])) === 'COMPLETED', 'the last job', 60_000);
    for (const id of ids) expect(await status(id)).toBe('COMPLETED');
    const e = await entries();
    expect(e.filter((w) => w.residency!.resident.some((r) => r.key === 'hot@1'))).toHaveLength(2);

    const session = await ort.InferenceSession.create(hotPath);
    const want = (await session.run({ x: new ort.Tensor('float32', x.slice(0, WIDTH), [1, WIDTH]) })).y.data as Float32Array;
    await session.release();
    const r = await gql<{ prediction: { result: { outputs: { data: number[] }[] } } }>(
      apis[1].url,
      'query($id: ID!) { prediction(id: $id) { result { outputs { data } } } }',
      { id: ids[JOBS - 1] },
    );
    const got = r.body.data!.prediction.result.outputs[0].data.slice(0, WIDTH);
    for (let j = 0; j < WIDTH; j++) expect(Math.abs(got[j] - want[j])).toBeLessThan(1e-3 * Math.max(1, Math.abs(want[j])));

    // With the backlog gone, the lane goes back to its owner alone.
    await until(async () => (await entries()).filter((w) => w.lanes!.includes(lane)).length === 1, 'the hot lane back to one worker');
  });
});
