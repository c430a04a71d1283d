/**
 * Stopping whatever Redis does: with Redis gone, SIGTERM still ends `serve`, `worker` and
 * `start` within their configured bounds (core/lifecycle/shutdown.ts), each saying in its last line
 * what it gave up on, and exiting 1 when that was work. `serve` without Redis answers 503
 * and recovers by itself. Real processes and a real redis-server, stopped for real.
 */
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { gql } from '../support/clients.ts';
import { alive, lastLine, loggedPids, stopsBefore } from '../support/processes.ts';
import { startPrivateRedis, type PrivateRedis } from '../../harness/private-redis.ts';
import { dropPrefix, listeningPort, spawnCli, startApi, startWorker, uniquePrefix, type RunningApi } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';

// Small bounds; the deadline each process must beat is generous on top (a liveness check:
// without the bounds these processes stayed up for as long as Redis was away).
const DRAIN_MS = 1000;
const SHUTDOWN_TIMEOUT_MS = 2000;
const DEADLINE_MS = SHUTDOWN_TIMEOUT_MS + 10_000;
const bounded = {
  BATCHLINE_DRAIN_MS: String(DRAIN_MS),
  BATCHLINE_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
  BATCHLINE_LOCK_DURATION_MS: '2000',
  BATCHLINE_HOST: '127.0.0.1',
};
const SUBMIT = 'mutation($i: PredictionInput!) { submitPrediction(model: "mlp-bench", input: $i) { id } }';
const row = (n: number) => ({ features: Array.from({ length: 512 }, (_, i) => Math.cos(n + i)) });

describe('serve without Redis', () => {
  let redis: PrivateRedis;
  beforeAll(async () => {
    redis = await startPrivateRedis();
    await redis.stop();
  });
  afterAll(() => redis?.stop());

  it('answers 503 with Retry-After, starts no Redis of its own, and serves once Redis appears', async () => {
    const prefix = uniquePrefix('serve-no-redis');
    const api = await spawnCli(['serve', '--port', '0'], { redisUrl: redis.url, prefix, env: bounded }, /"msg":"API listening"/);
    try {
      const url = `http://127.0.0.1:${listeningPort(api)}/graphql`;
      const down = await gql(url, SUBMIT, { i: row(0) });
      expect(down.status).toBe(503);
      expect(down.body.errors![0].extensions!.code).toBe('SERVICE_UNAVAILABLE');
      expect(down.headers.get('retry-after')).toBe('1');
      expect(api.output()).not.toMatch(/private redis-server/);

      await redis.start();
      await until(async () => (await fetch(url.replace('/graphql', '/ready'))).status === 200, 'ready once Redis is back');
      const up = await gql<{ submitPrediction: { id: string } }>(url, SUBMIT, { i: row(1) });
      expect(up.status).toBe(200);
      expect(up.body.data!.submitPrediction.id).toBeTruthy();
    } finally {
      await api.stop();
      await dropPrefix(redis.url, prefix);
    }
  });
});

describe('SIGTERM after Redis has stopped', () => {
  let redis: PrivateRedis;
  let api: RunningApi | undefined;
  beforeAll(async () => {
    redis = await startPrivateRedis({ appendonly: true });
  });
  afterAll(async () => {
    await api?.close();
    await redis?.stop();
  });

  it('serve exits within http.drainMs + margin, and exits 1 naming the request in flight it gave up on', async () => {
    if (!alive(redis.pid!)) await redis.start();
    const o = { redisUrl: redis.url, prefix: uniquePrefix('bound-api'), env: { ...bounded, BATCHLINE_MAINTENANCE: 'false' } };
    const proc = await spawnCli(['serve', '--port', '0'], o, /"msg":"API listening"/);
    const url = `http://127.0.0.1:${listeningPort(proc)}/graphql`;
    // The only gpu worker is frozen (alive and registered, taking nothing): this predict waits
    // in the API until shutdown gives up on it.
    const frozen = await startWorker('gpu', o);
    frozen.proc.kill('SIGSTOP');
    onTestFinished(() => frozen.kill('SIGKILL'));
    const inflight = gql(url, `{ predict(model: "mlp-bench", input: { features: [${Array(512).fill(0.5).join(',')}] }) { label } }`);
    const gpu = new Queue('gpu', { connection: { url: redis.url }, prefix: o.prefix });
    await until(async () => (await gpu.count()) >= 1, 'the predict to be queued');
    await gpu.close();
    await redis.stop(true);

    expect(await stopsBefore(proc, DRAIN_MS + 10_000)).toBe(1);
    expect((await inflight).status).toBe(503);
    const last = lastLine(proc, proc.proc.pid!);
    expect(last).toMatchObject({ requestsUnanswered: 1, redis: 'unreachable' });
    expect(last.msg).toMatch(/giving up on 1 request/);
  });

  it('worker exits within workers.shutdownTimeoutMs + margin, exits 1, and the job it left is run by another worker once Redis is back', async () => {
    if (!alive(redis.pid!)) await redis.start();
    const o = { redisUrl: redis.url, prefix: uniquePrefix('bound-worker'), env: { ...bounded, BATCHLINE_MAINTENANCE: 'false' } };
    api = await startApi(o);
    const ids: string[] = [];
    for (let i = 0; i < 200; i++)
      ids.push((await gql<{ submitPrediction: { id: string } }>(api.url, SUBMIT, { i: row(i) })).body.data!.submitPrediction.id);
    // One job at a time: there is always one in hand when Redis goes.
    const worker = await startWorker('gpu', { ...o, env: { ...o.env, BATCHLINE_WORKER_CONCURRENCY: '1' } });
    const status = (id: string) =>
      gql<{ prediction: { status: string } | null }>(api!.url, 'query($id: ID!) { prediction(id: $id) { status } }', { id });
    await until(async () => (await status(ids[5])).body.data?.prediction?.status === 'COMPLETED', 'the worker to be under way');
    await redis.stop(true); // SIGKILL; AOF (appendfsync always) keeps what was written.

    expect(await stopsBefore(worker, DEADLINE_MS)).toBe(1);
    const last = lastLine(worker, worker.proc.pid!);
    expect(last).toMatchObject({ redis: 'unreachable' });
    expect(last.jobsLeftToStallRecovery).toBeGreaterThanOrEqual(1);
    expect(last.msg).toMatch(/stall recovery/);

    await redis.start();
    await until(async () => (await fetch(api!.url.replace('/graphql', '/ready'))).status === 200, 'the API ready again');
    const second = await startWorker('gpu', o);
    try {
      await until(
        async () => (await Promise.all(ids.map(status))).every((s) => s.body.data?.prediction?.status === 'COMPLETED'),
        'every job, the abandoned ones too, to complete',
      );
    } finally {
      await second.stop();
      await dropPrefix(redis.url, o.prefix);
    }
  });

  it('start exits within its bound, after its API and workers have, and leaves no process behind', async () => {
    if (!alive(redis.pid!)) await redis.start();
    const o = { redisUrl: redis.url, prefix: uniquePrefix('bound-start'), env: { ...bounded, BATCHLINE_MAINTENANCE: 'false' } };
    const start = await spawnCli(['start', '--port', '0'], o, /"msg":"API listening"/);
    await until(() => (start.output().match(/"msg":"worker started"/g) ?? []).length === 2, 'both workers');
    await redis.stop(true);

    // Nothing was in hand: connections dropped without Redis are no lost work.
    expect(await stopsBefore(start, DEADLINE_MS + 5000)).toBe(0);
    const pids = loggedPids(start);
    expect(pids).toHaveLength(4); // start, the API, two workers
    await until(() => pids.every((pid) => !alive(pid)), 'every process of the stack to be gone', 5000);
    expect(start.output()).toMatch(/"msg":"stack stopped/);
  });

  it('start SIGKILLs a process that does not stop within its bound, then exits 1 with nothing left behind', async () => {
    if (!alive(redis.pid!)) await redis.start();
    const o = { redisUrl: redis.url, prefix: uniquePrefix('bound-kill'), env: { ...bounded, BATCHLINE_MAINTENANCE: 'false' } };
    const start = await spawnCli(['start', '--port', '0'], o, /"msg":"API listening"/);
    await until(() => (start.output().match(/"msg":"worker started"/g) ?? []).length === 2, 'both workers');
    // A stopped process cannot act on SIGTERM: only the escalation ends it.
    const apiPid = Number(/"pid":(\d+),"process":"api"/.exec(start.output())![1]);
    process.kill(apiPid, 'SIGSTOP');

    expect(await stopsBefore(start, DEADLINE_MS + 10_000)).toBe(1);
    expect(start.output()).toMatch(/"msg":"a process did not stop within its bound; killing it"/);
    const pids = loggedPids(start);
    await until(() => pids.every((pid) => !alive(pid)), 'every process of the stack to be gone', 5000);
    await dropPrefix(redis.url, o.prefix);
  });
});
