/**
 * Processes stopping and Redis going away, for real: SIGTERM on a worker and on the API,
 * Redis killed and restarted with AOF persistence, an API process replaced. Accepted work
 * is never lost, never answered twice, and clients get a clear answer meanwhile.
 */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { gql, sseCollect, wsClient, wsCollect } from '../support/clients.ts';
import { startPrivateRedis, type PrivateRedis } from '../../harness/private-redis.ts';
import {
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
import { countResults } from '../support/results.ts';

const SUBMIT = 'mutation($i: PredictionInput!) { submitPrediction(model: "mlp-bench", input: $i) { id } }';
const RESULT = 'subscription($id: ID!) { predictionResult(id: $id) { id status error { code } } }';
const row = (n: number) => ({ features: Array.from({ length: 512 }, (_, i) => Math.sin(n + i)) });

async function submitMany(url: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 25) {
    const rs = await Promise.all(
      Array.from({ length: Math.min(25, n - i) }, (_, k) => gql<{ submitPrediction: { id: string } }>(url, SUBMIT, { i: row(i + k) })),
    );
    for (const r of rs) {
      expect(r.body.errors).toBeUndefined();
      ids.push(r.body.data!.submitPrediction.id);
    }
  }
  return ids;
}

describe('SIGTERM on a worker', () => {
  const redisUrl = inject('redisUrl');
  const prefix = uniquePrefix('sigterm-w');
  const opts = {
    redisUrl,
    prefix,
    env: { BATCHLINE_LOCK_DURATION_MS: '2000', BATCHLINE_SHUTDOWN_TIMEOUT_MS: '5000', BATCHLINE_MAINTENANCE: 'false' },
  };
  let api: RunningApi;
  afterAll(async () => {
    await api?.close();
    await dropPrefix(redisUrl, prefix);
  });

  it('stops taking work, finishes what it holds, exits 0; nothing is lost or answered twice', async () => {
    api = await startApi(opts);
    const results = await countResults(redisUrl, prefix);
    try {
      const ids = await submitMany(api.url, 300);
      // One job at a time, each waiting out mlp-bench's 5 ms batching delay: at most ~200 jobs/s,
      // so the SIGTERM lands with work left even when this process is scheduled late.
      const first = await startWorker('gpu', { ...opts, env: { ...opts.env, BATCHLINE_WORKER_CONCURRENCY: '1' } });
      await until(() => results.counts.size >= 30, 'some results');
      expect(await first.stop()).toBe(0);
      expect(first.output()).toMatch(/"msg":"worker stopped"/);
      const doneByFirst = results.counts.size;
      expect(doneByFirst).toBeLessThan(ids.length);
      const second = await startWorker('gpu', opts);
      try {
        await until(() => ids.every((id) => results.counts.has(id)), 'every result');
        // A deliberate sleep, to prove a negative: give a late duplicate the chance to show up (a lock period and more).
        await new Promise((r) => setTimeout(r, 2500));
        expect(ids.filter((id) => results.counts.get(id)! > 1)).toEqual([]);
      } finally {
        await second.stop();
      }
    } finally {
      results.close();
    }
  });
});

describe('SIGTERM on the API', () => {
  const redisUrl = inject('redisUrl');
  const prefix = uniquePrefix('sigterm-a');
  // A long drain: the in-flight predict below waits for a worker thawed after the SIGTERM.
  const opts = { redisUrl, prefix, env: { BATCHLINE_MAINTENANCE: 'false', BATCHLINE_HOST: '127.0.0.1', BATCHLINE_DRAIN_MS: '30000' } };

  afterAll(() => dropPrefix(redisUrl, prefix));

  it('answers a request in flight, tells SSE and WebSocket subscribers to resubscribe, then exits 0', async () => {
    const apiProc = await spawnCli(['serve', '--port', '0'], opts, /"msg":"API listening"/);
    const port = listeningPort(apiProc);
    const url = `http://127.0.0.1:${port}/graphql`;
    const [a, b] = await submitMany(url, 2);
    const sse = sseCollect(url, RESULT, { id: a });
    const client = wsClient(url.replace('http', 'ws'));
    const ws = wsCollect(client, RESULT, { id: b }).then(
      (events) => ({ events, error: undefined as unknown }),
      (error: unknown) => ({ events: [], error }),
    );
    // A synchronous predict waits: the only gpu worker is frozen (alive and registered, taking nothing).
    const worker = await startWorker('gpu', opts);
    worker.proc.kill('SIGSTOP');
    const inflight = gql<{ predict: { label: string } }>(
      url,
      '{ predict(model: "mlp-bench", input: { features: [' + Array(512).fill(0.5).join(',') + '] }) { label } }',
    );
    const redis = new Redis(redisUrl);
    await until(
      async () =>
        (await redis.pubsub('NUMSUB', `${prefix}:result:${a}`))[1] === 1 &&
        (await redis.pubsub('NUMSUB', `${prefix}:result:${b}`))[1] === 1,
      'both subscriptions',
    );
    redis.disconnect();
    // The predict has reached the API once its job is queued (the two submitted jobs are there too).
    const gpu = new Queue('gpu', { connection: { url: redisUrl }, prefix });
    await until(async () => (await gpu.count()) >= 3, 'the in-flight predict to be queued');
    await gpu.close();

    const exited = apiProc.stop();
    // Thawed once the API is shutting down, so the subscribers' results cannot beat their ending.
    await until(() => apiProc.output().includes('"msg":"shutting down"'), 'the API to begin shutting down');
    worker.proc.kill('SIGCONT');
    try {
      const answered = await inflight;
      expect(answered.status).toBe(200);
      expect(answered.body.data!.predict.label).toMatch(/^class-/);
      expect(await exited).toBe(0);
      const sseEvents = (await sse).events;
      expect(sseEvents).toHaveLength(1);
      expect(sseEvents[0].errors![0].extensions!.code).toBe('SERVICE_UNAVAILABLE');
      const wsResult = await ws;
      const wsErrors = (wsResult.events[0]?.errors ?? (wsResult.error as { extensions?: Record<string, unknown> }[])) as {
        extensions?: Record<string, unknown>;
      }[];
      expect(wsErrors[0].extensions!.code).toBe('SERVICE_UNAVAILABLE');
    } finally {
      await client.dispose();
      await worker.stop();
    }
  });

  it('a result finished before an API restart is still readable by id from the new process', async () => {
    const first = await spawnCli(['serve', '--port', '0'], opts, /"msg":"API listening"/);
    // The replacement takes the same port, as a restarted pod keeps its address.
    const port = listeningPort(first);
    const url = `http://127.0.0.1:${port}/graphql`;
    const worker = await startWorker('gpu', opts);
    try {
      const [id] = await submitMany(url, 1);
      await until(
        async () =>
          (await gql<{ prediction: { status: string } }>(url, 'query($id: ID!) { prediction(id: $id) { status } }', { id })).body.data!
            .prediction.status === 'COMPLETED',
        'completion',
      );
      expect(await first.stop()).toBe(0);
      const second = await spawnCli(['serve', '--port', String(port)], opts, /"msg":"API listening"/);
      try {
        const r = await gql<{ prediction: { status: string; result: { predictions: unknown[] } } }>(
          url,
          'query($id: ID!) { prediction(id: $id) { status result { predictions { label } } } }',
          { id },
        );
        expect(r.body.data!.prediction.status).toBe('COMPLETED');
        expect(r.body.data!.prediction.result.predictions).toHaveLength(1);
      } finally {
        await second.stop();
      }
    } finally {
      await worker.stop();
    }
  });
});

describe('Redis stopped and restarted (AOF on)', () => {
  let redis: PrivateRedis;
  let api: RunningApi;
  let worker: Child | undefined;
  const prefix = uniquePrefix('redis-restart');

  beforeAll(async () => {
    redis = await startPrivateRedis({ appendonly: true });
  });

  afterAll(async () => {
    await api?.close();
    await worker?.stop();
    await redis?.stop();
  });

  it('answers 503 while Redis is down, recovers by itself, resumes open subscriptions, and loses no accepted job', async () => {
    const opts = { redisUrl: redis.url, prefix, env: { BATCHLINE_MAINTENANCE: 'false', BATCHLINE_LOCK_DURATION_MS: '2000' } };
    api = await startApi(opts);
    const ids = await submitMany(api.url, 40);
    const sse = sseCollect(api.url, RESULT, { id: ids[0] }, 60_000);
    const probe = new Redis(redis.url);
    probe.on('error', () => {});
    await until(async () => (await probe.pubsub('NUMSUB', `${prefix}:result:${ids[0]}`))[1] === 1, 'the subscription');
    probe.disconnect();

    await redis.stop(true); // SIGKILL: only what AOF wrote survives.
    const down = await gql(api.url, SUBMIT, { i: row(1) });
    expect(down.status).toBe(503);
    expect(down.body.errors![0].extensions!.code).toBe('SERVICE_UNAVAILABLE');
    expect(down.headers.get('retry-after')).toBe('1');
    expect((await fetch(api.url.replace('/graphql', '/ready'))).status).toBe(503);
    // A subscription begun during the outage is refused while it lasts (once it waited for
    // Redis to come back): SSE with the HTTP status, WebSocket with an error message.
    const sseDown = await sseCollect(api.url, RESULT, { id: ids[1] }, 20_000);
    expect(sseDown.status).toBe(503);
    expect(sseDown.events[0]?.errors?.[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE');
    const client = wsClient(api.ws);
    try {
      const wsDown = await wsCollect(client, RESULT, { id: ids[1] }).then(
        (events) => events[0]?.errors,
        (e: unknown) => e as { extensions?: Record<string, unknown> }[],
      );
      expect(wsDown?.[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE');
      // Internal transport details stay on the server.
      expect(wsDown?.[0]?.extensions?.http).toBeUndefined();
    } finally {
      await client.dispose();
    }

    await redis.start();
    await until(async () => (await fetch(api.url.replace('/graphql', '/ready'))).status === 200, 'ready again');
    const results = await countResults(redis.url, prefix);
    try {
      worker = await startWorker('gpu', opts);
      await until(async () => {
        const statuses = await Promise.all(
          ids.map((id) => gql<{ prediction: { status: string } }>(api.url, 'query($id: ID!) { prediction(id: $id) { status } }', { id })),
        );
        return statuses.every((s) => s.body.data?.prediction.status === 'COMPLETED');
      }, 'every accepted job to complete');
      const { events } = await sse;
      expect(events).toHaveLength(1);
      expect(events[0].data).toMatchObject({ predictionResult: { id: ids[0], status: 'COMPLETED' } });
      expect([...results.counts.values()].every((n) => n === 1)).toBe(true);
    } finally {
      results.close();
    }
  });
});
