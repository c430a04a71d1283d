/**
 * Coalesced submissions (core/api/tickets.ts, core/batching/submit-batcher.ts): concurrent
 * `submitPrediction`s of one model version, row shape and priority share a job, and each
 * keeps its own id, record, answer, deadline and cancellation. Real Redis, BullMQ, API and
 * worker processes. No worker runs while the submissions arrive, so the jobs they make can be
 * read in the queue before any is taken.
 */
import { Queue, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { gql } from '../support/clients.ts';
import { dropPrefix, startApi, startWorker, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';
import { freePort } from '../../cli/local-redis.ts';
import { keyspace } from '../../core/redis/connection.ts';
import type { JobPart, PredictionJobData, PredictionRecord } from '../../core/prediction/record.ts';
import { countResults } from '../support/results.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('coalesce');
const opts = { redisUrl, prefix, env: { BATCHLINE_MAINTENANCE: 'false' } };
const SUBMIT = 'mutation($i: PredictionInput!, $t: Int) { submitPrediction(model: "mlp-bench", input: $i, timeoutMs: $t) { id status } }';
const POLL = 'query($id: ID!) { prediction(id: $id) { status result { label score } error { code } } }';
const CANCEL = 'mutation($id: ID!) { cancelPrediction(id: $id) { status error { code } } }';

interface Polled {
  status: string;
  result: { label: string; score: number } | null;
  error: { code: string } | null;
}

let api: RunningApi;
let listener: { close(): void };
let redis: Redis;
let queue: Queue<PredictionJobData>;
/** Publications per prediction id: each must be answered exactly once. */
const published = new Map<string, number>();

/** A seeded row of mlp-bench's 512 inputs. */
function row(seed: number): number[] {
  let s = seed * 2654435761;
  return Array.from({ length: 512 }, () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) | 0;
    return ((s >>> 0) / 2 ** 32) * 2 - 1;
  });
}

const submit = async (seed: number, timeoutMs?: number): Promise<string> => {
  const r = await gql<{ submitPrediction: { id: string } }>(api.url, SUBMIT, { i: { features: row(seed) }, t: timeoutMs });
  expect(r.body.errors).toBeUndefined();
  return r.body.data!.submitPrediction.id;
};
const poll = async (id: string): Promise<Polled> => (await gql<{ prediction: Polled }>(api.url, POLL, { id })).body.data!.prediction;
const partsOf = (job: Job<PredictionJobData>): JobPart[] =>
  job.data.parts ?? [{ id: job.data.id, requestId: job.data.requestId, rows: job.data.rows, submittedAt: job.data.enqueuedAt }];
const waitingJobs = async (): Promise<Job<PredictionJobData>[]> => (await queue.getJobs(['prioritized', 'wait'])).filter(Boolean);

/** A gpu worker with a metrics port, so the rows it ran can be read. */
async function workerWithMetrics(): Promise<{ worker: Child; rowsRun: () => Promise<number>; seen: () => string }> {
  const port = await freePort();
  const worker = await startWorker('gpu', { ...opts, env: { ...opts.env, BATCHLINE_WORKER_HTTP_PORT: String(port) } });
  let last = '';
  const rowsRun = async (): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    last = text
      .split('\n')
      .filter((l) => l.startsWith('batchline_batch_rows_'))
      .join('; ');
    return Number(/^batchline_batch_rows_sum\{model="mlp-bench@1"[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0);
  };
  return { worker, rowsRun, seen: () => `rows run (${last})` };
}

beforeAll(async () => {
  listener = await countResults(redisUrl, prefix, published);
  redis = new Redis(redisUrl);
  queue = new Queue<PredictionJobData>('gpu', { connection: { url: redisUrl }, prefix });
  api = await startApi(opts);
});

afterAll(async () => {
  await api?.close();
  await queue?.close();
  listener?.close();
  redis?.disconnect();
  await dropPrefix(redisUrl, prefix);
});

describe('coalesced submissions', () => {
  it('serves 200 submissions arriving together with fewer jobs, each answered once, as each alone is answered', async () => {
    const N = 200;
    const ids = await Promise.all(Array.from({ length: N }, (_, n) => submit(n)));
    expect(new Set(ids).size).toBe(N);
    const jobs = await waitingJobs();
    // Every prediction is in exactly one job, and the jobs are fewer than the predictions.
    expect(
      jobs
        .flatMap(partsOf)
        .map((p) => p.id)
        .sort(),
    ).toEqual([...ids].sort());
    expect(jobs.length).toBeLessThan(N);
    const shared = jobs.filter((j) => partsOf(j).length > 1);
    console.log(`${N} submissions in ${jobs.length} jobs (${shared.length} shared)`);

    const { worker } = await workerWithMetrics();
    try {
      await until(() => ids.every((id) => published.has(id)), 'every result');
      const together = await Promise.all(ids.map(poll));
      // The same inputs, one at a time: nothing to share a job with.
      const alone: Polled[] = [];
      for (let n = 0; n < N; n++) {
        const id = await submit(n);
        await until(() => published.has(id), `result ${n} alone`);
        alone.push(await poll(id));
      }
      for (let n = 0; n < N; n++) {
        expect(together[n].status).toBe('COMPLETED');
        expect(together[n].result!.label).toBe(alone[n].result!.label);
        expect(together[n].result!.score).toBeCloseTo(alone[n].result!.score, 5);
      }
      // Exactly once: no prediction was published twice.
      expect(ids.filter((id) => published.get(id) !== 1)).toEqual([]);
    } finally {
      await worker.stop();
    }
  });

  it('cancels one part of a shared job: CANCELLED for it, the rest of the job runs without it', async () => {
    const ids = await Promise.all(Array.from({ length: 16 }, (_, n) => submit(1000 + n)));
    const job = (await waitingJobs()).find((j) => partsOf(j).length > 1);
    expect(job, 'a job shared by several submissions').toBeDefined();
    const parts = partsOf(job!);
    const victim = parts[1].id;
    const cancelled = await gql<{ cancelPrediction: { status: string } }>(api.url, CANCEL, { id: victim });
    expect(cancelled.body.data!.cancelPrediction.status).toBe('CANCELLED');
    // The job is still there for its other parts.
    expect(await queue.getJobState(job!.id!)).toBe('prioritized');
    const { worker, rowsRun, seen } = await workerWithMetrics();
    try {
      await until(() => ids.every((id) => published.has(id)), 'every answer');
      for (const id of ids) {
        const p = await poll(id);
        if (id === victim) expect(p).toMatchObject({ status: 'CANCELLED', result: null });
        else expect(p.status).toBe('COMPLETED');
      }
      // The cancelled part was not run: every row but its one went through inference.
      await until(async () => (await rowsRun()) === ids.length - 1, seen);
      expect(ids.filter((id) => published.get(id) !== 1)).toEqual([]);
    } finally {
      await worker.stop();
    }
  });

  it('answers a part whose deadline passed DEADLINE_EXCEEDED without running it; the parts beside it run', async () => {
    const N = 16;
    const timeouts = Array.from({ length: N }, (_, n) => (n % 2 ? 200 : 60_000));
    const ids = await Promise.all(timeouts.map((t, n) => submit(2000 + n, t)));
    const mixed = (await waitingJobs()).find((j) => new Set(partsOf(j).map((p) => (p.deadline ?? 0) - p.submittedAt)).size > 1);
    expect(mixed, 'a job shared by parts with different deadlines').toBeDefined();
    // A deliberate sleep: the short deadlines must pass before any worker exists to take the jobs.
    await new Promise((r) => setTimeout(r, 400));
    const { worker, rowsRun, seen } = await workerWithMetrics();
    try {
      await until(() => ids.every((id) => published.has(id)), 'every answer');
      for (let n = 0; n < N; n++) {
        const p = await poll(ids[n]);
        if (timeouts[n] === 200) expect(p).toMatchObject({ status: 'FAILED', error: { code: 'DEADLINE_EXCEEDED' } });
        else expect(p.status).toBe('COMPLETED');
      }
      await until(async () => (await rowsRun()) === N / 2, seen);
      expect(ids.filter((id) => published.get(id) !== 1)).toEqual([]);
    } finally {
      await worker.stop();
    }
  });

  it('does not run again, nor answer again, a part answered before the worker took its job (a retry after an earlier run)', async () => {
    const ids = await Promise.all(Array.from({ length: 16 }, (_, n) => submit(3000 + n)));
    const job = (await waitingJobs()).find((j) => partsOf(j).length > 1);
    expect(job, 'a job shared by several submissions').toBeDefined();
    const answered = partsOf(job!)[0].id;
    // What an earlier run of the job left: this part's final record, already published.
    const keys = keyspace(prefix);
    const before = JSON.parse((await redis.get(keys.prediction(answered)))!) as PredictionRecord;
    const earlier: PredictionRecord = {
      ...before,
      status: 'COMPLETED',
      finishedAt: Date.now(),
      result: {
        id: answered,
        model: 'mlp-bench',
        version: before.version,
        predictions: [{ label: 'earlier-run', score: 0.5, probabilities: null }],
        outputs: [],
        timings: { queueMs: 0, inferenceMs: 0, totalMs: 0 },
        cached: false,
        batchRows: 1,
      },
    };
    await redis.set(keys.prediction(answered), JSON.stringify(earlier), 'EX', 300);
    const { worker, rowsRun, seen } = await workerWithMetrics();
    try {
      await until(() => ids.every((id) => id === answered || published.has(id)), 'every other answer');
      expect(await poll(answered)).toMatchObject({ status: 'COMPLETED', result: { label: 'earlier-run' } });
      await until(async () => (await rowsRun()) === ids.length - 1, seen);
      expect(published.has(answered)).toBe(false);
      expect(ids.filter((id) => id !== answered && published.get(id) !== 1)).toEqual([]);
    } finally {
      await worker.stop();
    }
  });
});
