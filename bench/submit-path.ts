/**
 * What a submission costs on its way in, through the API's own code (core/api/tickets.ts,
 * without GraphQL): `npm run bench:submit-path`. A private
 * redis-server; 64 submitters, each submitting spam-mlp rows one after the other, for 3
 * interleaved rounds of two ways:
 *   - `alone`: one job per submission, as before coalescing (the model's edge row limit set to 1);
 *   - `coalesced`: concurrent submissions share a job (the model's own limits).
 * Printed, medians: submissions/s, this process's CPU ms and Redis commands per submission
 * (`INFO commandstats` deltas, Lua's commands included) and jobs per submission. No worker
 * runs; each round's queue is emptied after it. (Round trips, in turn, per send: `alone` three,
 * the record, the admission, the add; `coalesced` two for all its submissions, the admission
 * with the records, then the add.)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { freePort, redisServerArgs } from '../cli/local-redis.ts';
import { loadConfig } from '../core/config/settings.ts';
import { scanConfigured } from '../core/models/repository.ts';
import { createLogger } from '../core/telemetry/logger.ts';
import { createMetrics } from '../core/telemetry/metrics.ts';
import { PredictionQueues } from '../core/prediction/queues.ts';
import { ResultStore } from '../core/prediction/result-store.ts';
import { keysOf, redisOptions } from '../core/redis/connection.ts';
import { Tickets } from '../core/api/tickets.ts';
import type { ModelCatalog } from '../core/api/catalog.ts';
import type { ModelVersion } from '../core/models/repository.ts';
import type { ResultFeed } from '../core/prediction/result-feed.ts';

const SUBMISSIONS = Number(process.env.BENCH_JOBS ?? 4000);
const CONCURRENCY = 64;
const ROUNDS = 3;
const ROOT = new URL('..', import.meta.url).pathname;

const dir = mkdtempSync(join(tmpdir(), 'bench-submit-path-'));
const port = await freePort();
const server = spawn('redis-server', redisServerArgs({ port, dir, appendonly: false }), { stdio: 'ignore' });
const admin = new Redis({ port, maxRetriesPerRequest: 1, retryStrategy: (n) => (n > 50 ? null : 100) });
admin.on('error', () => {});
for (let i = 0; i < 50 && (await admin.ping().catch(() => '')) !== 'PONG'; i++) await new Promise((r) => setTimeout(r, 100));

const config = loadConfig({ env: { BATCHLINE_MODELS: join(ROOT, 'models'), BATCHLINE_QUEUE_MAX_DEPTH: String(10 * SUBMISSIONS) } });
const repository = await scanConfigured(config, createLogger({ ...config.log, level: 'silent' } as never));
const spam = repository.find('spam-mlp')!;
const width = spam.config.inputs[0].shape[1];

async function commands(): Promise<number> {
  const stats = await admin.info('commandstats');
  let n = 0;
  for (const m of stats.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)) if (m[1] !== 'info') n += Number(m[2]);
  return n;
}

type Way = 'alone' | 'coalesced';
interface Round {
  perSec: number;
  cpuMs: number;
  commands: number;
  jobs: number;
}

async function round(way: Way, n: number): Promise<Round> {
  const prefix = `bench-submit-path-${way}-${n}`;
  // The producer connection the API uses (auto-pipelined).
  const redis = new Redis({ port, ...redisOptions('producer') });
  await new Promise((r) => redis.once('ready', r));
  const mv: ModelVersion =
    way === 'alone' ? { ...spam, config: { ...spam.config, batching: { ...spam.config.batching, maxBatchSize: 1 } } } : spam;
  const queues = new PredictionQueues(redis, prefix, config.queue.maxDepth, config.queue.shards);
  const store = new ResultStore(redis, keysOf(redis, prefix), config.results.ttlSeconds);
  const catalog = { route: () => ({ mv, route: 'stable', stable: mv.version }), metricLabel: (m: string) => m } as unknown as ModelCatalog;
  const tickets = new Tickets({
    config,
    catalog,
    predictor: { cached: () => undefined },
    queues,
    store,
    feed: {} as ResultFeed,
    metrics: createMetrics('api'),
  });
  await queues.queue('cpu').waitUntilReady();
  const before = await commands();
  const cpu = process.cpuUsage();
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < SUBMISSIONS) {
        const k = next++;
        const features = Array.from({ length: width }, (_, i) => ((k * 31 + i) % 97) / 97);
        await tickets.submit({ model: 'spam-mlp', input: { features }, requestId: `r${k}` });
      }
    }),
  );
  const ms = performance.now() - started;
  const used = process.cpuUsage(cpu);
  const after = await commands();
  const q = new Queue('cpu', { connection: admin, prefix });
  const jobs = (await q.getJobCounts('prioritized')).prioritized;
  await q.obliterate({ force: true });
  await q.close();
  await queues.close();
  redis.disconnect();
  return {
    perSec: (SUBMISSIONS / ms) * 1000,
    cpuMs: (used.user + used.system) / 1000 / SUBMISSIONS,
    commands: (after - before) / SUBMISSIONS,
    jobs: jobs / SUBMISSIONS,
  };
}

const rounds: Record<Way, Round[]> = { alone: [], coalesced: [] };
try {
  for (let n = 0; n < ROUNDS; n++) for (const way of ['alone', 'coalesced'] as const) rounds[way].push(await round(way, n));
} finally {
  admin.disconnect();
  server.kill();
  rmSync(dir, { recursive: true, force: true });
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const m = (way: Way, k: keyof Round): number => median(rounds[way].map((r) => r[k]));
console.log(
  `${SUBMISSIONS} spam-mlp submissions through Tickets.submit, ${CONCURRENCY} at a time, medians of ${ROUNDS} interleaved rounds`,
);
console.log('| way | submissions/s | API CPU ms/submission | Redis commands/submission | jobs/submission |');
console.log('|---|---|---|---|---|');
for (const way of ['alone', 'coalesced'] as const)
  console.log(
    `| ${way} | ${m(way, 'perSec').toFixed(0)} | ${m(way, 'cpuMs').toFixed(3)} | ${m(way, 'commands').toFixed(2)} | ${m(way, 'jobs').toFixed(2)} |`,
  );
const ratio = (k: keyof Round): string => (m('coalesced', k) / m('alone', k)).toFixed(2);
console.log(`coalesced/alone: submissions/s ${ratio('perSec')}, CPU ${ratio('cpuMs')}, Redis commands ${ratio('commands')}`);
process.exit(0);
