/**
 * Queue promises: priorities, backpressure, cancellation, retries and deadlines, on real
 * BullMQ queues and worker processes.
 */
import { DelayedError, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { gql, sseCollect, wsClient, wsCollect } from '../support/clients.ts';
import { addModel, linearOnnx, LINEAR_CONFIG, tempRepository } from '../support/model-repo.ts';
import { dropPrefix, REPO_MODELS, startApi, startWorker, uniquePrefix, type RunningApi } from '../../harness/stack.ts';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('queues');
const models = tempRepository();
cpSync(join(REPO_MODELS, 'name-gender'), join(models, 'name-gender'), { recursive: true });
cpSync(join(REPO_MODELS, 'mlp-bench'), join(models, 'mlp-bench'), { recursive: true });
addModel(models, 'flex', '1', linearOnnx(), {
  ...LINEAR_CONFIG,
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, -1] }],
  retry: { attempts: 3, backoffMs: 50 },
});
const opts = { redisUrl, prefix, models, env: { BATCHLINE_MAINTENANCE: 'false' } };
let api: RunningApi;
let listener: Redis;
const finished: string[] = [];

const SUBMIT =
  'mutation($m: String!, $i: PredictionInput!, $p: Int, $t: Int) { submitPrediction(model: $m, input: $i, priority: $p, timeoutMs: $t) { id status } }';
const submit = async (m: string, i: Record<string, unknown>, p?: number, t?: number): Promise<string> => {
  const r = await gql<{ submitPrediction: { id: string } }>(api.url, SUBMIT, { m, i, p, t });
  expect(r.body.errors).toBeUndefined();
  return r.body.data!.submitPrediction.id;
};
const poll = async (id: string) =>
  (
    await gql<{ prediction: { status: string; error: { code: string } | null } }>(
      api.url,
      'query($id: ID!) { prediction(id: $id) { status error { code } } }',
      { id },
    )
  ).body.data!.prediction;

beforeAll(async () => {
  listener = new Redis(redisUrl);
  // Async results are published on their own channels; a synchronous job's reply goes only to
  // the waiting API's reply channel (nothing is stored for it), so it is noted as 'sync'.
  await listener.psubscribe(`${prefix}:result:*`, `${prefix}:reply:*`);
  listener.on('pmessage', (_p, channel) =>
    finished.push(channel.startsWith(`${prefix}:reply:`) ? 'sync' : channel.slice(`${prefix}:result:`.length)),
  );
  api = await startApi(opts);
});

afterAll(async () => {
  await api?.close();
  listener?.disconnect();
  await dropPrefix(redisUrl, prefix);
});

describe('priorities', () => {
  it('with the pool saturated, higher-priority work finishes first, and synchronous predict before both', async () => {
    finished.length = 0;
    // The only worker takes one job at a time. It is frozen while the work queues up: alive and
    // registered (a synchronous predict is refused at once when no worker serves its model),
    // but taking nothing until every job is in the queue.
    const worker = await startWorker('cpu', {
      ...opts,
      env: { ...opts.env, BATCHLINE_WORKER_CONCURRENCY: '1', BATCHLINE_WORKER_THREADS: '1' },
    });
    worker.proc.kill('SIGSTOP');
    const low: string[] = [];
    const high: string[] = [];
    for (let i = 0; i < 8; i++) {
      low.push(await submit('name-gender', { text: `Lowname${i}` }, 1));
      high.push(await submit('name-gender', { text: `Highname${i}` }, 10));
    }
    const sync = gql<{ predict: { id: string } }>(api.url, '{ predict(model: "name-gender", input: { text: "Syncname" }) { id } }');
    const cpu = new Queue('cpu', { connection: { url: redisUrl }, prefix });
    await until(async () => (await cpu.getJobCounts('prioritized')).prioritized >= 17, 'all jobs queued');
    await cpu.close();
    worker.proc.kill('SIGCONT');
    try {
      expect((await sync).body.data!.predict.id).toBeTruthy();
      await until(() => [...low, ...high].every((id) => finished.includes(id)), 'every job');
      const order = finished.filter((id) => id === 'sync' || low.includes(id) || high.includes(id));
      expect(order[0]).toBe('sync');
      const lastHigh = Math.max(...high.map((id) => order.indexOf(id)));
      const firstLow = Math.min(...low.map((id) => order.indexOf(id)));
      expect(lastHigh).toBeLessThan(firstLow);
    } finally {
      await worker.stop();
    }
  });
});

describe('cancellation', () => {
  it('cancels queued work; its subscriber gets a CANCELLED event; the poll says CANCELLED', async () => {
    const id = await submit('mlp-bench', { features: Array.from({ length: 512 }, () => 0) });
    const client = wsClient(api.ws);
    try {
      const events = wsCollect(client, 'subscription($id: ID!) { predictionResult(id: $id) { status error { code } } }', { id });
      // The subscription is confirmed before it reads the record; give it its SUBSCRIBE.
      const probe = new Redis(redisUrl);
      await until(async () => (await probe.pubsub('NUMSUB', `${prefix}:result:${id}`))[1] === 1, 'the subscription');
      probe.disconnect();
      const c = await gql<{ cancelPrediction: { status: string } }>(
        api.url,
        'mutation($id: ID!) { cancelPrediction(id: $id) { status } }',
        { id },
      );
      expect(c.body.data!.cancelPrediction.status).toBe('CANCELLED');
      expect(await events).toEqual([{ data: { predictionResult: { status: 'CANCELLED', error: { code: 'CANCELLED' } } } }]);
    } finally {
      await client.dispose();
    }
    expect((await poll(id)).status).toBe('CANCELLED');
    const again = await gql<{ cancelPrediction: { status: string } }>(
      api.url,
      'mutation($id: ID!) { cancelPrediction(id: $id) { status } }',
      { id },
    );
    expect(again.body.data!.cancelPrediction.status).toBe('CANCELLED');
    const queue = new Queue('gpu', { connection: { url: redisUrl }, prefix });
    expect(await queue.getJob(id)).toBeUndefined();
    await queue.close();
  });

  it('refuses to cancel finished work (409 NOT_CANCELLABLE) and unknown ids (404)', async () => {
    const worker = await startWorker('cpu', opts);
    try {
      const id = await submit('name-gender', { text: 'Finishedname' });
      await until(async () => (await poll(id)).status === 'COMPLETED', 'completion');
      const r = await gql(api.url, 'mutation($id: ID!) { cancelPrediction(id: $id) { status } }', { id });
      expect(r.status).toBe(409);
      expect(r.body.errors![0].extensions!.code).toBe('NOT_CANCELLABLE');
    } finally {
      await worker.stop();
    }
    const r = await gql(api.url, 'mutation { cancelPrediction(id: "nope") { status } }');
    expect(r.status).toBe(404);
  });
});

describe('retries and deadlines', () => {
  it('retries a failing job the configured number of times, then tells the subscriber once', async () => {
    const worker = await startWorker('cpu', opts);
    try {
      const id = await submit('flex', { tensors: [{ name: 'x', shape: [1, 5], datatype: 'FP32', data: [1, 2, 3, 4, 5] }] });
      const { events } = await sseCollect(api.url, 'subscription($id: ID!) { predictionResult(id: $id) { status error { code } } }', {
        id,
      });
      expect(events).toEqual([{ data: { predictionResult: { status: 'FAILED', error: { code: 'INFERENCE_FAILED' } } } }]);
      const queue = new Queue('cpu', { connection: { url: redisUrl }, prefix });
      // failedReason is set by every failed attempt; only the state says the last one is done.
      await until(async () => (await queue.getJobState(id)) === 'failed', 'the job to be marked failed');
      expect((await queue.getJob(id))!.attemptsMade).toBe(3);
      await queue.close();
    } finally {
      await worker.stop();
    }
  });

  it('drops work whose deadline passed while it waited, answering DEADLINE_EXCEEDED without running it', async () => {
    const id = await submit('mlp-bench', { features: Array.from({ length: 512 }, () => 1) }, 5, 100);
    // A deliberate sleep: the job's 100 ms deadline must pass before any worker exists to take it.
    await new Promise((r) => setTimeout(r, 300));
    const worker = await startWorker('gpu', opts);
    try {
      // RUNNING is shown while the worker holds the job, before it drops it: wait for a final status.
      await until(async () => ['COMPLETED', 'FAILED'].includes((await poll(id)).status), 'a final status');
      expect(await poll(id)).toEqual({ status: 'FAILED', error: { code: 'DEADLINE_EXCEEDED' } });
    } finally {
      await worker.stop();
    }
  });
});

describe('backpressure', () => {
  it('holds queue.maxDepth exactly under concurrency across two API replicas: 503 QUEUE_FULL with Retry-After past it, never accepting then dropping', async () => {
    const bp = { ...opts, prefix: `${prefix}-bp`, env: { ...opts.env, BATCHLINE_QUEUE_MAX_DEPTH: '50' } };
    const [a, b] = await Promise.all([startApi(bp), startApi(bp)]);
    try {
      const accepted: string[] = [];
      const refused: Awaited<ReturnType<typeof gql>>[] = [];
      let next = 0;
      // 200 submissions, 16 at a time, alternating replicas; no worker takes any of them.
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < 200) {
            const k = next++;
            const r = await gql<{ submitPrediction: { id: string } }>((k % 2 ? a : b).url, SUBMIT, {
              m: 'mlp-bench',
              i: { features: Array.from({ length: 512 }, () => k) },
            });
            if (r.body.errors) refused.push(r);
            else accepted.push(r.body.data!.submitPrediction.id);
          }
        }),
      );
      expect(accepted).toHaveLength(50);
      expect(refused).toHaveLength(150);
      for (const r of refused) {
        expect(r.status).toBe(503);
        expect(r.body.errors![0].extensions!.code).toBe('QUEUE_FULL');
        expect(r.headers.get('retry-after')).toBe('1');
      }
      // Concurrent submissions share jobs (coalesced): the queue holds exactly the 50 accepted
      // predictions, each once, in however many jobs.
      const queue = new Queue('gpu', { connection: { url: redisUrl }, prefix: `${prefix}-bp` });
      const jobs = await queue.getJobs(['prioritized']);
      const held = jobs.flatMap((j) => (j.data.parts ?? [{ id: j.data.id }]).map((p: { id: string }) => p.id));
      expect(held.sort()).toEqual([...accepted].sort());

      // A worker hands every job back while its version loads (what `workers.deferColdJobs`
      // does: BullMQ's moveToDelayed, before the job's parts are released). Delayed, they still
      // count, a coalesced one with its parts: the pool stays full, at exactly 50.
      const refusedDepth = async (): Promise<string> => {
        const r = await gql(a.url, SUBMIT, { m: 'mlp-bench', i: { features: Array.from({ length: 512 }, () => -1) } });
        expect(r.body.errors?.[0].extensions!.code).toBe('QUEUE_FULL');
        return r.body.errors![0].message;
      };
      const taken = new Set<string>();
      const handBack = new Worker(
        'gpu',
        async (job, token) => {
          taken.add(job.id!);
          await job.moveToDelayed(Date.now() + 600_000, token);
          throw new DelayedError();
        },
        { connection: { url: redisUrl }, prefix: `${prefix}-bp`, concurrency: 8 },
      );
      await until(async () => (await queue.getJobCounts('delayed')).delayed === jobs.length, 'every job handed back', 15_000);
      await handBack.close();
      expect(taken.size).toBe(jobs.length);
      expect(await refusedDepth()).toContain('has 50 predictions waiting');
      // Promoted back to waiting (the load ended): counted once, not twice.
      for (const j of await queue.getJobs(['delayed'])) await j.promote();
      expect((await queue.getJobCounts('prioritized')).prioritized).toBe(jobs.length);
      expect(await refusedDepth()).toContain('has 50 predictions waiting');
      await queue.close();
    } finally {
      await Promise.all([a.close(), b.close()]);
      await dropPrefix(redisUrl, `${prefix}-bp`);
    }
  });

  it('refuses a synchronous predict at once (503 SERVICE_UNAVAILABLE) when no live worker serves its model', async () => {
    // No gpu worker runs in this file: the old answer was a 504 after the full 30 s deadline.
    const r = await gql(api.url, 'query($i: PredictionInput!) { predict(model: "mlp-bench", input: $i) { label } }', {
      i: { features: Array.from({ length: 512 }, () => 0) },
    });
    expect(r.status).toBe(503);
    expect(r.body.errors![0].extensions!.code).toBe('SERVICE_UNAVAILABLE');
    expect(r.body.errors![0].message).toMatch(/no live worker serves mlp-bench/);
    expect(r.headers.get('retry-after')).toBe('1');
  });
});
