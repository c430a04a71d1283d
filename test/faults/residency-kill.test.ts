/**
 * A worker SIGKILLed while it loads a model version on demand (under a model memory budget):
 * the job it took runs on another worker, which loads the version itself, and is answered
 * once, right (checked against onnxruntime in this process). Under `queue.placement: model`,
 * the killed worker's lane is taken over by its peer once the lane's next job stops moving,
 * before the dead worker's registry entry expires. docs/RESIDENCY.md.
 */
import { Redis } from 'ioredis';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { encodeDenseModel } from '../../scripts/models/onnx-writer.ts';
import { gql } from '../support/clients.ts';
import { addModel, tempRepository } from '../support/model-repo.ts';
import { dropPrefix, startApi, startWorker, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';
import { shardOf } from '../../core/prediction/queues.ts';
import type { WorkerEntry } from '../../core/control/worker-registry.ts';
import { countResults } from '../support/results.ts';

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
let listener: { close(): void };
const published = new Map<string, number>();
const workers: Child[] = [];

beforeAll(async () => {
  listener = await countResults(redisUrl, prefix, published);
  api = await startApi(opts);
});

afterAll(async () => {
  await api?.close();
  await Promise.all(workers.map((w) => w.kill()));
  listener?.close();
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

describe('a lane owner killed during a load (queue.placement: model)', () => {
  it('its peer takes the lane over before the dead entry expires, and every job is answered once and right', async () => {
    const lanePrefix = `${prefix}-lanes`;
    const laneOpts = {
      ...opts,
      prefix: lanePrefix,
      env: { ...env, BATCHLINE_QUEUE_SHARDS_CPU: '2', BATCHLINE_QUEUE_PLACEMENT: 'model', BATCHLINE_WORKER_CONCURRENCY: '4' },
    };
    const laneApi = await startApi(laneOpts);
    const answers = new Map<string, number>();
    const sub = new Redis(redisUrl);
    await sub.psubscribe(`${lanePrefix}:result:*`);
    sub.on('pmessage', (_p, channel) => {
      const id = channel.slice(`${lanePrefix}:result:`.length);
      answers.set(id, (answers.get(id) ?? 0) + 1);
    });
    const admin = new Redis(redisUrl);
    try {
      const a = await startWorker('cpu', laneOpts);
      const b = await startWorker('cpu', laneOpts);
      workers.push(a, b);
      // Both registered and agreeing: the two lanes split between them, each consumed once.
      await until(async () => {
        const all = Object.values(await admin.hgetall(`${lanePrefix}:workers`)).map((j) => JSON.parse(j) as WorkerEntry);
        const lanes = all.flatMap((e) => e.lanes ?? []);
        return all.length === 2 && lanes.length === 2 && new Set(lanes).size === 2;
      }, 'the two workers to split the two lanes');
      const x = Array.from({ length: WIDTH }, (_, j) => Math.cos(j) / 2);
      const submit = async (): Promise<string> => {
        const s = await gql<{ submitPrediction: { id: string } }>(
          laneApi.url,
          'mutation($x: [Float!]!) { submitPrediction(model: "wide", input: { tensors: [{ name: "x", shape: [1, 4096], datatype: "FP32", data: $x }] }) { id } }',
          { x },
        );
        expect(s.body.errors).toBeUndefined();
        return s.body.data!.submitPrediction.id;
      };
      const ids = [await submit()];
      const loading = /"msg":"loading model version"/;
      await until(() => loading.test(a.output()) || loading.test(b.output()), 'the lane owner to start loading');
      const [owner, peer] = loading.test(a.output()) ? [a, b] : [b, a];
      const ownerId = /"workerId":"([^"]+)"/.exec(owner.output())![1];
      await owner.kill('SIGKILL');
      // Its entry outlives it until it expires; the peer must not wait for that.
      const dead = JSON.parse((await admin.hget(`${lanePrefix}:workers`, ownerId))!) as WorkerEntry;
      const lane = shardOf('wide@1', 2);
      expect(dead.lanes).toContain(lane);
      // Two more jobs for the dead owner's lane: fewer than one worker's concurrency, so no backlog rule lifts the lane.
      ids.push(await submit(), await submit());
      await until(
        () => ids.every((id) => answers.has(id)),
        () => `every job answered (got ${answers.size} of ${ids.length})`,
      );
      const starved = peer
        .output()
        .split('\n')
        .find((l) => l.includes('"msg":"lanes starved'));
      expect(starved, 'the peer found the lane starved').toBeDefined();
      expect((JSON.parse(starved!) as { lanes: number[] }).lanes).toContain(lane);
      // The takeover came before the registry dropped the dead owner (without it, the lane waits for that).
      expect((JSON.parse(starved!) as { time: number }).time).toBeLessThan(dead.expiresAt);
      expect(peer.output()).toMatch(/"model":"wide@1"[^\n]*"msg":"model version loaded"/);
      // A deliberate sleep, to prove a negative: a duplicate would come within a lock period.
      await new Promise((r) => setTimeout(r, 2500));
      for (const id of ids) expect(answers.get(id)).toBe(1);
      const session = await ort.InferenceSession.create(path);
      const want = (await session.run({ x: new ort.Tensor('float32', Float32Array.from(x), [1, WIDTH]) })).y.data as Float32Array;
      await session.release();
      for (const id of ids) {
        const r = await gql<{ prediction: { status: string; result: { outputs: { data: number[] }[] } } }>(
          laneApi.url,
          'query($id: ID!) { prediction(id: $id) { status result { outputs { data } } } }',
          { id },
        );
        expect(r.body.data!.prediction.status).toBe('COMPLETED');
        const got = r.body.data!.prediction.result.outputs[0].data;
        for (let j = 0; j < got.length; j++) expect(Math.abs(got[j] - want[j])).toBeLessThan(1e-3 * Math.max(1, Math.abs(want[j])));
      }
    } finally {
      sub.disconnect();
      admin.disconnect();
      await laneApi.close();
      await dropPrefix(redisUrl, lanePrefix);
    }
  });
});
