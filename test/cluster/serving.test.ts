/**
 * The functional core against a real Redis Cluster (3 masters, 3 replicas on loopback): the
 * same promises as against one Redis, with hash-tagged keys, sharded result channels, queues
 * in their own slots, and two API processes sharing the cluster.
 */
import { Queue } from 'bullmq';
import { Redis, type Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql, sseCollect, wsClient, wsCollect } from '../support/clients.ts';
import { clusterClient, clusterStack, keysPerMaster, shardSubscribers, useCluster } from '../support/cluster.ts';
import {
  listeningPort,
  spawnCli,
  startApi,
  startWorker,
  uniquePrefix,
  type Child,
  type RunningApi,
  type StackOptions,
} from '../../harness/stack.ts';
import { until } from '../support/wait.ts';
import { shardOf } from '../../core/prediction/queues.ts';
import { keyspace } from '../../core/redis/connection.ts';

const holder = useCluster();
const prefix = uniquePrefix('cluster');
let opts: StackOptions;
let api: RunningApi;
let second: { child: Child; url: string; ws: string };
let client: Cluster;
const workers: Child[] = [];

const SUBMIT =
  'mutation($m: String!, $i: PredictionInput!, $p: Int) { submitPrediction(model: $m, input: $i, priority: $p) { id status } }';
const RESULT = 'subscription($id: ID!) { predictionResult(id: $id) { id status result { label } error { code } } }';
const POLL = 'query($id: ID!) { prediction(id: $id) { id status result { label } error { code } } }';

async function submit(url: string, m: string, i: Record<string, unknown>, p?: number): Promise<string> {
  const r = await gql<{ submitPrediction: { id: string } }>(url, SUBMIT, { m, i, p });
  expect(r.body.errors).toBeUndefined();
  return r.body.data!.submitPrediction.id;
}

async function poll(
  url: string,
  id: string,
): Promise<{ status: string; result: { label: string } | null; error: { code: string } | null }> {
  const r = await gql<{ prediction: { status: string; result: { label: string } | null; error: { code: string } | null } }>(url, POLL, {
    id,
  });
  expect(r.body.errors).toBeUndefined();
  return r.body.data!.prediction;
}

beforeAll(async () => {
  opts = clusterStack(holder.cluster, prefix, { env: { BATCHLINE_MAINTENANCE: 'false' } });
  client = clusterClient(holder.cluster);
  workers.push(await startWorker('cpu', opts));
  api = await startApi(opts);
  const child = await spawnCli(['serve', '--port', '0'], opts, /"msg":"API listening"/);
  const port = listeningPort(child);
  second = { child, url: `http://127.0.0.1:${port}/graphql`, ws: `ws://127.0.0.1:${port}/graphql` };
}, 120_000);

afterAll(async () => {
  await api?.close();
  await second?.child.stop();
  await Promise.all(workers.map((w) => w.stop()));
  client?.disconnect();
});

describe('on a Redis Cluster', () => {
  it('answers a synchronous predict', async () => {
    const r = await gql<{ predict: { label: string; score: number } }>(
      api.url,
      '{ predict(model: "name-gender", input: { text: "Maria" }) { label score } }',
    );
    expect(r.body.errors).toBeUndefined();
    expect(r.body.data!.predict.label).toBe('female');
  });

  it('delivers a submitted prediction once over SSE and over WebSocket, and a poll reads it', async () => {
    const a = await submit(api.url, 'name-gender', { text: 'Elizabeth' });
    const { events } = await sseCollect(api.url, RESULT, { id: a });
    expect(events).toEqual([{ data: { predictionResult: { id: a, status: 'COMPLETED', result: { label: 'female' }, error: null } } }]);
    const b = await submit(api.url, 'name-gender', { text: 'Robert' });
    const ws = wsClient(api.ws);
    try {
      expect(await wsCollect(ws, RESULT, { id: b })).toEqual([
        { data: { predictionResult: { id: b, status: 'COMPLETED', result: { label: 'male' }, error: null } } },
      ]);
    } finally {
      await ws.dispose();
    }
    expect(await poll(api.url, b)).toEqual({ id: b, status: 'COMPLETED', result: { label: 'male' }, error: null });
  });

  it('delivers a result that finished before the subscription began, once', async () => {
    const id = await submit(api.url, 'name-gender', { text: 'Penelope' });
    await until(async () => (await poll(api.url, id)).status === 'COMPLETED', 'completion');
    const { events } = await sseCollect(api.url, RESULT, { id });
    expect(events).toEqual([{ data: { predictionResult: { id, status: 'COMPLETED', result: { label: 'female' }, error: null } } }]);
  });

  it('serves two API processes sharing the cluster: submitted on one, delivered and polled on the other', async () => {
    const id = await submit(api.url, 'name-gender', { text: 'Bartholomew' });
    const ws = wsClient(second.ws);
    try {
      expect(await wsCollect(ws, RESULT, { id })).toEqual([
        { data: { predictionResult: { id, status: 'COMPLETED', result: { label: 'male' }, error: null } } },
      ]);
    } finally {
      await ws.dispose();
    }
    const other = await submit(second.url, 'name-gender', { text: 'Charlotte' });
    const { events } = await sseCollect(api.url, RESULT, { id: other });
    expect(events).toHaveLength(1);
    expect((await poll(second.url, id)).status).toBe('COMPLETED');
    const sync = await gql<{ predict: { label: string } }>(
      second.url,
      '{ predict(model: "name-gender", input: { text: "Anna" }) { label } }',
    );
    expect(sync.body.data!.predict.label).toBe('female');
  });

  it('cancels queued work; its subscriber gets one CANCELLED event over a sharded channel', async () => {
    // No gpu worker in this file: the job stays queued.
    const id = await submit(api.url, 'mlp-bench', { features: Array.from({ length: 512 }, () => 0) });
    const ws = wsClient(api.ws);
    try {
      const events = wsCollect(ws, 'subscription($id: ID!) { predictionResult(id: $id) { status error { code } } }', { id });
      await until(
        async () => (await shardSubscribers(holder.cluster, keyspace(prefix, true).resultChannel(id))) === 1,
        'the sharded subscription',
      );
      const c = await gql<{ cancelPrediction: { status: string } }>(
        api.url,
        'mutation($id: ID!) { cancelPrediction(id: $id) { status } }',
        {
          id,
        },
      );
      expect(c.body.data!.cancelPrediction.status).toBe('CANCELLED');
      expect(await events).toEqual([{ data: { predictionResult: { status: 'CANCELLED', error: { code: 'CANCELLED' } } } }]);
    } finally {
      await ws.dispose();
    }
    expect((await poll(api.url, id)).status).toBe('CANCELLED');
    const gpu = new Queue('{gpu}', { connection: client, prefix });
    expect(await gpu.getJob(id)).toBeUndefined();
    await gpu.close();
  });

  it('keeps a prediction’s record and result channel in one slot, its queue in another, and spreads records over every master', async () => {
    // One at a time, each its own job: 30 hash tags to spread.
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) ids.push(await submit(api.url, 'name-gender', { text: `Spreadname${i}` }));
    // Together, they share jobs (coalesced): a job's predictions share their first 8 characters, and with them one slot.
    const together = await Promise.all(Array.from({ length: 30 }, (_, i) => submit(api.url, 'name-gender', { text: `Togethername${i}` })));
    const all = [...ids, ...together];
    await until(async () => (await Promise.all(all.map((id) => poll(api.url, id)))).every((p) => p.status === 'COMPLETED'), 'all 60');
    const { slotOf } = holder.cluster;
    const jobs = new Map<string, string[]>();
    for (const id of together) jobs.set(id.slice(0, 8), [...(jobs.get(id.slice(0, 8)) ?? []), id]);
    expect([...jobs.values()].some((job) => job.length > 1)).toBe(true);
    for (const job of jobs.values())
      expect(new Set(await Promise.all(job.map((id) => slotOf(keyspace(prefix, true).prediction(id))))).size).toBe(1);
    expect(await slotOf(keyspace(prefix, true).prediction(ids[0]))).toBe(await slotOf(keyspace(prefix, true).resultChannel(ids[0])));
    expect(await slotOf(`${prefix}:{cpu}:wait`)).toBe(await slotOf(`${prefix}:{cpu}:admitting`));
    const perMaster = await keysPerMaster(holder.cluster, `${prefix}:prediction:*`);
    expect([...perMaster.values()].filter((n) => n > 0)).toHaveLength(3);
  });

  it('acknowledges a submission once the replicas of its queue’s master and its record’s master have it (WAIT on each)', async () => {
    const { cluster } = holder;
    const waits = async (port: number): Promise<number> => {
      const r = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 });
      try {
        return Number(/cmdstat_wait:calls=(\d+)/.exec(await r.info('commandstats'))?.[1] ?? 0);
      } finally {
        r.disconnect();
      }
    };
    const masters = (await cluster.topology()).filter((n) => n.role === 'master');
    const before = new Map(await Promise.all(masters.map(async (m) => [m.port, await waits(m.port)] as const)));
    // No cpu worker may answer meanwhile (a worker's result is acknowledged the same way): the job goes to the gpu pool.
    const id = await submit(api.url, 'mlp-bench', { features: Array.from({ length: 512 }, () => 0.5) });
    const queueMaster = await cluster.masterOf(await cluster.slotOf(`${prefix}:{gpu}:wait`));
    const recordMaster = await cluster.masterOf(await cluster.slotOf(keyspace(prefix, true).prediction(id)));
    const added = async (port: number) => (await waits(port)) - before.get(port)!;
    expect(await added(queueMaster.port)).toBeGreaterThanOrEqual(1);
    expect(await added(recordMaster.port)).toBeGreaterThanOrEqual(1);
    await gql(api.url, 'mutation($id: ID!) { cancelPrediction(id: $id) { status } }', { id });
  });

  it('sums every process’s live figures and reads queue depths on the cluster (the operations view and /metrics)', async () => {
    const STATS = '{ serverStats(windowSeconds: 60) { processes { role } queues { pool waiting } models { name requestsPerSecond } } }';
    type Stats = {
      processes: { role: string }[];
      queues: { pool: string; waiting: number }[];
      models: { name: string; requestsPerSecond: number }[];
    };
    let stats: Stats | undefined;
    // Each process adds its counts once a second, in one MULTI over keys of one slot.
    await until(async () => {
      stats = (await gql<{ serverStats: Stats }>(api.url, STATS)).body.data?.serverStats;
      return Boolean(stats?.models.find((m) => m.name === 'name-gender')?.requestsPerSecond);
    }, 'the requests of this file in the live figures');
    expect(new Set(stats!.processes.map((p) => p.role))).toEqual(new Set(['api', 'worker']));
    const metrics = await (await fetch(api.url.replace('/graphql', '/metrics'))).text();
    expect(metrics).toMatch(/batchline_queue_depth\{[^}]*pool="cpu"[^}]*\} \d+/);
  });

  it('keeps priorities with the pool saturated: synchronous work first, then urgent, then the rest', async () => {
    const worker = await startWorker('cpu', {
      ...opts,
      env: { ...opts.env, BATCHLINE_WORKER_CONCURRENCY: '1', BATCHLINE_WORKER_THREADS: '1', BATCHLINE_LOG_LEVEL: 'debug' },
    });
    // The file's other worker leaves: this one alone takes the jobs, in the order it logs them.
    await workers.pop()!.stop();
    worker.proc.kill('SIGSTOP');
    try {
      const low: string[] = [];
      const high: string[] = [];
      for (let i = 0; i < 6; i++) {
        low.push(await submit(api.url, 'name-gender', { text: `Lowname${i}` }, 1));
        high.push(await submit(api.url, 'name-gender', { text: `Highname${i}` }, 10));
      }
      const sync = fetch(api.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': 'sync-first' },
        body: JSON.stringify({ query: '{ predict(model: "name-gender", input: { text: "Syncname" }) { label } }' }),
      });
      const cpu = new Queue('{cpu}', { connection: client, prefix });
      await until(async () => (await cpu.getJobCounts('prioritized')).prioritized >= 13, 'all jobs queued');
      await cpu.close();
      worker.proc.kill('SIGCONT');
      expect((await sync).status).toBe(200);
      await until(
        async () => (await Promise.all([...low, ...high].map((id) => poll(api.url, id)))).every((p) => p.status === 'COMPLETED'),
        'every job',
      );
      const order = [...worker.output().matchAll(/"requestId":"([^"]+)","predictionId":"([^"]+)"[^\n]*"msg":"predicted"/g)].map((m) =>
        m[1] === 'sync-first' ? 'sync' : m[2],
      );
      expect(order[0]).toBe('sync');
      expect(Math.max(...high.map((id) => order.indexOf(id)))).toBeLessThan(Math.min(...low.map((id) => order.indexOf(id))));
      expect(low.every((id) => order.includes(id))).toBe(true);
    } finally {
      worker.proc.kill('SIGCONT');
      workers.push(worker);
    }
  });
});

describe('rate limits on the cluster', () => {
  it('holds a client to its bucket across two API processes (429 with Retry-After past its burst)', async () => {
    const o = clusterStack(holder.cluster, `${prefix}-rl`, {
      env: { BATCHLINE_MAINTENANCE: 'false', BATCHLINE_RATE_LIMIT_PER_SECOND: '0.1', BATCHLINE_RATE_LIMIT_BURST: '3' },
    });
    const [a, b] = await Promise.all([startApi(o), startApi(o)]);
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await gql((i % 2 ? b : a).url, '{ __typename }')).status);
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
      const refused = await gql(a.url, '{ __typename }');
      expect(refused.body.errors![0].extensions!.code).toBe('RATE_LIMITED');
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('periodic jobs on the cluster', () => {
  it('registers the schedulers in the hash-tagged maintenance queue, runs their ticks, and runs each task on demand', async () => {
    const p = `${prefix}-maint`;
    const o = clusterStack(holder.cluster, p, { env: { BATCHLINE_POLL_MODELS_CRON: '* * * * * *' } });
    const maintained = await startApi(o);
    try {
      const queue = new Queue(keyspace(p, true).queueName('maintenance'), { connection: client, prefix: p });
      await until(async () => (await queue.getJobSchedulersCount()) === 4, 'the schedulers');
      await queue.close();
      // The poll ticks every second: its fingerprint lands once the maintenance worker ran one.
      await until(async () => (await client.get(keyspace(p, true).modelsFingerprint)) !== null, 'a poll-models tick');
      for (const task of ['housekeeping', 'drift-monitor', 'poll-models', 'rollout-gates']) {
        const r = await gql<{ runMaintenance: string }>(maintained.url, 'mutation($t: String!) { runMaintenance(task: $t) }', { t: task });
        expect(r.body.errors, task).toBeUndefined();
      }
    } finally {
      await maintained.close();
    }
  });
});

describe('queue shards', () => {
  it('spreads a pool over its shards by id, each on its own master; workers drain every shard, urgent first within each', async () => {
    const p = `${prefix}-shards`;
    const o = clusterStack(holder.cluster, p, { env: { BATCHLINE_MAINTENANCE: 'false', BATCHLINE_QUEUE_SHARDS_CPU: '3' } });
    const shardedApi = await startApi(o);
    const worker = await startWorker('cpu', {
      ...o,
      env: { ...o.env, BATCHLINE_WORKER_CONCURRENCY: '3', BATCHLINE_WORKER_THREADS: '1', BATCHLINE_LOG_LEVEL: 'debug' },
    });
    worker.proc.kill('SIGSTOP');
    try {
      const low: string[] = [];
      const high: string[] = [];
      for (let i = 0; i < 12; i++) {
        low.push(await submit(shardedApi.url, 'name-gender', { text: `Shardlow${i}` }, 1));
        high.push(await submit(shardedApi.url, 'name-gender', { text: `Shardhigh${i}` }, 10));
      }
      const names = [0, 1, 2].map((shard) => keyspace(p, true).queueName('cpu', shard, 3));
      const queues = names.map((n) => new Queue(n, { connection: client, prefix: p }));
      const counts = await Promise.all(queues.map(async (q) => (await q.getJobCounts('prioritized')).prioritized));
      await Promise.all(queues.map((q) => q.close()));
      // Every shard got work, exactly where shardOf says, and the shards are three slots.
      const expected = names.map((_, s) => [...low, ...high].filter((id) => shardOf(id, 3) === s).length);
      expect(counts).toEqual(expected);
      expect(counts.every((n) => n > 0)).toBe(true);
      // Three shards on three masters: their tags are spread over the slot space.
      const owners = await Promise.all(
        names.map(async (n) => (await holder.cluster.masterOf(await holder.cluster.slotOf(`${p}:${n}:wait`))).id),
      );
      expect(new Set(owners).size).toBe(3);
      worker.proc.kill('SIGCONT');
      await until(
        async () => (await Promise.all([...low, ...high].map((id) => poll(shardedApi.url, id)))).every((r) => r.status === 'COMPLETED'),
        'every job of every shard',
      );
      const order = [...worker.output().matchAll(/"predictionId":"([^"]+)"[^\n]*"msg":"predicted"/g)].map((m) => m[1]);
      for (let s = 0; s < 3; s++) {
        const mine = (ids: string[]) => ids.filter((id) => shardOf(id, 3) === s).map((id) => order.indexOf(id));
        if (mine(high).length && mine(low).length) expect(Math.max(...mine(high))).toBeLessThan(Math.min(...mine(low)));
      }
    } finally {
      worker.proc.kill('SIGCONT');
      await worker.stop();
      await shardedApi.close();
    }
  });
});
