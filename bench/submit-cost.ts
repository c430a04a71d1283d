/**
 * What adding a submission's job costs, and whether gathering the submissions of one tick
 * into one `addBulk` pays: `npm run bench:submit`. Both ways add the same jobs (the shape and
 * options of a spam-mlp submission) to a private redis-server, 64 at a time, in 3 interleaved
 * rounds; the medians of jobs/s, CPU ms per job of this process and of Redis, and Redis
 * commands per job are printed with the ratios.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue, type JobsOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { freePort, redisServerArgs } from '../cli/local-redis.ts';

const JOBS = Number(process.env.BENCH_JOBS ?? 4000);
const CONCURRENCY = 64;
const ROUNDS = 3;

const dir = mkdtempSync(join(tmpdir(), 'bench-submit-'));
const port = await freePort();
const server = spawn('redis-server', redisServerArgs({ port, dir, appendonly: false }), { stdio: 'ignore' });
const redis = new Redis({ port, enableAutoPipelining: true, maxRetriesPerRequest: 1, retryStrategy: (n) => (n > 50 ? null : 100) });
// Refused until the server listens; the pings below wait for it.
redis.on('error', () => {});
for (let i = 0; i < 50 && (await redis.ping().catch(() => '')) !== 'PONG'; i++) await new Promise((r) => setTimeout(r, 100));

async function redisFigures(): Promise<{ cpuMs: number; commands: number }> {
  const [cpu, stats] = await Promise.all([redis.info('cpu'), redis.info('stats')]);
  const num = (text: string, key: string): number => Number(new RegExp(`${key}:([\\d.]+)`).exec(text)![1]);
  return { cpuMs: (num(cpu, 'used_cpu_user') + num(cpu, 'used_cpu_sys')) * 1000, commands: num(stats, 'total_commands_processed') };
}

const data = {
  requestId: 'bench',
  model: 'spam-mlp',
  version: '1',
  pool: 'cpu',
  // 64 FP32 values as base64, as a submission's wire input carries them.
  input: { kind: 'tensors', tensors: [{ name: 'features', datatype: 'FP32', shape: [1, 64], f32: 'A'.repeat(344) }] },
  rows: 1,
  enqueuedAt: Date.now(),
};
const options = (jobId: string): JobsOptions => ({
  jobId,
  priority: 5,
  attempts: 3,
  backoff: { type: 'fixed', delay: 1000 },
  removeOnComplete: true,
  removeOnFail: { age: 300, count: 10_000 },
});

type Mode = 'add' | 'addBulk';
interface Round {
  jobsPerSec: number;
  nodeCpuMs: number;
  redisCpuMs: number;
  commands: number;
}

async function round(mode: Mode, n: number): Promise<Round> {
  const queue = new Queue('cpu', { connection: redis, prefix: `bench-submit-${mode}-${n}` });
  await queue.waitUntilReady();
  // addBulk: the submissions of one tick, gathered and sent as one bulk.
  let gathered: { id: string; done: () => void }[] = [];
  const bulk = (id: string): Promise<void> =>
    new Promise((done) => {
      if (gathered.push({ id, done }) > 1) return;
      setImmediate(() => {
        const batch = gathered;
        gathered = [];
        void queue
          .addBulk(batch.map((b) => ({ name: 'predict', data: { ...data, id: b.id }, opts: options(b.id) })))
          .then(() => batch.forEach((b) => b.done()));
      });
    });
  const add = (id: string): Promise<void> =>
    mode === 'add' ? queue.add('predict', { ...data, id }, options(id)).then(() => {}) : bulk(id);
  const before = await redisFigures();
  const cpu = process.cpuUsage();
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < JOBS) await add(`job-${next++}`);
    }),
  );
  const ms = performance.now() - started;
  const used = process.cpuUsage(cpu);
  const after = await redisFigures();
  await queue.obliterate({ force: true });
  await queue.close();
  return {
    jobsPerSec: (JOBS / ms) * 1000,
    nodeCpuMs: (used.user + used.system) / 1000 / JOBS,
    redisCpuMs: (after.cpuMs - before.cpuMs) / JOBS,
    commands: (after.commands - before.commands) / JOBS,
  };
}

const rounds: Record<Mode, Round[]> = { add: [], addBulk: [] };
try {
  for (let n = 0; n < ROUNDS; n++) for (const mode of ['add', 'addBulk'] as const) rounds[mode].push(await round(mode, n));
} finally {
  redis.disconnect();
  server.kill();
  rmSync(dir, { recursive: true, force: true });
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const m = (mode: Mode, k: keyof Round): number => median(rounds[mode].map((r) => r[k]));
console.log(`${JOBS} jobs, ${CONCURRENCY} at a time, medians of ${ROUNDS} interleaved rounds`);
console.log('| way | jobs/s | client CPU ms/job | Redis CPU ms/job | Redis commands/job |');
console.log('|---|---|---|---|---|');
for (const mode of ['add', 'addBulk'] as const)
  console.log(
    `| ${mode} | ${m(mode, 'jobsPerSec').toFixed(0)} | ${m(mode, 'nodeCpuMs').toFixed(3)} | ${m(mode, 'redisCpuMs').toFixed(3)} | ${m(mode, 'commands').toFixed(2)} |`,
  );
const ratio = (k: keyof Round): string => (m('addBulk', k) / m('add', k)).toFixed(2);
console.log(`addBulk/add: jobs/s ${ratio('jobsPerSec')}, client CPU ${ratio('nodeCpuMs')}, Redis CPU ${ratio('redisCpuMs')}`);
