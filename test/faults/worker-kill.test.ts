/**
 * A GPU-pool worker killed with SIGKILL in the middle of its batches loses no job: BullMQ's
 * stall detection hands the jobs it held to the next worker, and every prediction is
 * published exactly once (a retried job already answered is not answered again), every part
 * of a job shared by coalesced submissions included.
 */
import { Queue, QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { gql } from '../support/clients.ts';
import { dropPrefix, startApi, startWorker, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';
import { freePort } from '../../cli/local-redis.ts';
import type { PredictionJobData } from '../../core/prediction/record.ts';
import { countResults } from '../support/results.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('kill');
// Short locks so a dead worker's jobs come back in seconds, not BullMQ's default 30 s.
// One inference thread and 32-row jobs: the work outlasts the test's reaction to "N results",
// so each kill lands while the worker holds jobs, however late the test process is scheduled.
const opts = {
  redisUrl,
  prefix,
  env: { BATCHLINE_LOCK_DURATION_MS: '2000', BATCHLINE_WORKER_THREADS: '1', BATCHLINE_INTRA_OP_THREADS: '1' },
};
const ROWS = 32;
let api: RunningApi;
let listener: { close(): void };
const published = new Map<string, number>();
const workers: Child[] = [];
const stalled = new Set<string>();
let events: QueueEvents;

beforeAll(async () => {
  listener = await countResults(redisUrl, prefix, published);
  events = new QueueEvents('gpu', { connection: { url: redisUrl }, prefix });
  events.on('stalled', ({ jobId }) => stalled.add(jobId));
  await events.waitUntilReady();
  api = await startApi(opts);
});

afterAll(async () => {
  await api?.close();
  await Promise.all(workers.map((w) => w.kill()));
  listener?.close();
  await events?.close();
  await dropPrefix(redisUrl, prefix);
});

describe('worker killed mid-batch', () => {
  it('loses no job and answers each exactly once, over several kills', async () => {
    const JOBS = 400;
    const KILLS = 2;
    const rows = Float32Array.from({ length: ROWS * 512 }, (_, i) => Math.cos(i));
    const ids: string[] = [];
    const submits = Array.from({ length: JOBS }, (_, n) => {
      rows[0] = n; // every job's input differs
      const base64 = Buffer.from(rows.buffer).toString('base64');
      return gql<{ submitPrediction: { id: string } }>(
        api.url,
        'mutation($i: PredictionInput!) { submitPrediction(model: "mlp-bench", input: $i) { id } }',
        {
          i: { tensors: [{ name: 'input', shape: [ROWS, 512], datatype: 'FP32', base64 }] },
        },
      );
    });
    for (const s of await Promise.all(submits)) {
      expect(s.body.errors).toBeUndefined();
      ids.push(s.body.data!.submitPrediction.id);
    }
    for (let k = 0; k < KILLS; k++) {
      const w = await startWorker('gpu', opts);
      workers.push(w);
      const target = Math.floor((JOBS * (k + 1)) / (KILLS + 2));
      await until(() => published.size >= target, `${target} results before kill ${k + 1}`);
      await w.kill('SIGKILL');
    }
    // The survivor is alone after the last kill, so its stall check is what hands that worker's jobs back.
    const metricsPort = await freePort();
    const survivor = await startWorker('gpu', { ...opts, env: { ...opts.env, BATCHLINE_WORKER_HTTP_PORT: String(metricsPort) } });
    workers.push(survivor);
    await until(() => ids.every((id) => published.has(id)), 'every result');
    // A deliberate sleep, to prove a negative: give a late duplicate the chance to show up (a second lock period).
    await new Promise((r) => setTimeout(r, 2500));
    const lost = ids.filter((id) => !published.has(id)).length;
    const duplicated = ids.filter((id) => (published.get(id) ?? 0) > 1).length;
    // Evidence the kills hit work in hand: jobs a dead worker held were detected as stalled.
    const recovered = stalled.size;
    console.log(`jobs=${JOBS} kills=${KILLS} recovered=${recovered} lost=${lost} duplicated=${duplicated}`);
    expect(recovered).toBeGreaterThan(0);
    // ... and it counted them where BatchlineStalledJobs looks.
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(Number(/^batchline_stalled_jobs_total\{pool="gpu"[^}]*\} (\d+)$/m.exec(metrics)?.[1] ?? 0)).toBeGreaterThan(0);
    expect(lost).toBe(0);
    expect(duplicated).toBe(0);
    const sample = await gql<{ prediction: { status: string; result: { predictions: unknown[] } } }>(
      api.url,
      'query($id: ID!) { prediction(id: $id) { status result { predictions { label } } } }',
      { id: ids[0] },
    );
    expect(sample.body.data!.prediction.status).toBe('COMPLETED');
    expect(sample.body.data!.prediction.result.predictions).toHaveLength(ROWS);
  });

  it('answers every part of shared jobs exactly once when the worker holding them is killed', async () => {
    // 4-row submissions: up to 4 share a 16-row job (the edge row limit).
    const SUBMISSIONS = 240;
    const PART_ROWS = 4;
    // The workers of the test before stop first: the submissions must wait in the queue.
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    const rows = Float32Array.from({ length: PART_ROWS * 512 }, (_, i) => Math.sin(i));
    const submits = Array.from({ length: SUBMISSIONS }, (_, n) => {
      rows[0] = n;
      const base64 = Buffer.from(rows.buffer).toString('base64');
      return gql<{ submitPrediction: { id: string } }>(
        api.url,
        'mutation($i: PredictionInput!) { submitPrediction(model: "mlp-bench", input: $i) { id } }',
        { i: { tensors: [{ name: 'input', shape: [PART_ROWS, 512], datatype: 'FP32', base64 }] } },
      );
    });
    const ids: string[] = [];
    for (const s of await Promise.all(submits)) {
      expect(s.body.errors).toBeUndefined();
      ids.push(s.body.data!.submitPrediction.id);
    }
    // No worker runs yet: the jobs are all in the queue, and some hold several submissions.
    const queue = new Queue<PredictionJobData>('gpu', { connection: { url: redisUrl }, prefix });
    const jobs = (await queue.getJobs(['prioritized'])).filter((j) => j.data.parts?.some((p) => ids.includes(p.id)));
    await queue.close();
    const shared = jobs.filter((j) => j.data.parts!.length > 1);
    expect(shared.length).toBeGreaterThan(0);
    const stalledBefore = stalled.size;
    const w = await startWorker('gpu', opts);
    workers.push(w);
    await until(() => ids.filter((id) => published.has(id)).length >= SUBMISSIONS / 3, 'a third of the results before the kill');
    await w.kill('SIGKILL');
    workers.push(await startWorker('gpu', opts));
    await until(() => ids.every((id) => published.has(id)), 'every result');
    // A deliberate sleep, to prove a negative: give a late duplicate the chance to show up (a second lock period).
    await new Promise((r) => setTimeout(r, 2500));
    const lost = ids.filter((id) => !published.has(id)).length;
    const duplicated = ids.filter((id) => (published.get(id) ?? 0) > 1).length;
    const recovered = [...stalled].filter((id) => jobs.some((j) => j.id === id)).length;
    console.log(
      `submissions=${SUBMISSIONS} jobs=${jobs.length} shared=${shared.length} recovered=${recovered} (stalled before: ${stalledBefore}) lost=${lost} duplicated=${duplicated}`,
    );
    // Evidence the kill hit shared work in hand.
    expect(recovered).toBeGreaterThan(0);
    expect(lost).toBe(0);
    expect(duplicated).toBe(0);
  });
});
