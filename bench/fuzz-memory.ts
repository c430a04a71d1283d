/**
 * What hostile input leaves in the API's memory: `npm run bench:fuzz-memory`. A `batchline
 * serve` child (and a cpu worker) on a private redis-server, as in test/errors/fuzz.test.ts;
 * its resident memory (RSS) and V8 heap are read idle at the start, after each of three
 * seeded fuzz runs of 12,000 requests (harness/fuzz-requests.ts, 8 at a time), and idle
 * again at the end; printed with the ratio of the end to the start.
 *
 * BENCH_FUZZ_REQUESTS (12000), BENCH_FUZZ_RUNS (3), FUZZ_SEED (20251125), BENCH_IDLE_MS
 * (30000: how long the API is left alone before an idle reading). BENCH_HEAP_SNAPSHOT=1 has
 * the API write a heap snapshot (SIGUSR2, node's --heapsnapshot-signal) into its working
 * folder after the runs, to see what holds memory.
 */
import { readFileSync, mkdtempSync, readdirSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPrivateRedis } from '../harness/private-redis.ts';
import { listeningPort, spawnCli, startWorker, uniquePrefix } from '../harness/stack.ts';
import { fuzzApiKeys, makeRequest, MAX_BODY, prng, send } from '../harness/fuzz-requests.ts';

const REQUESTS = Number(process.env.BENCH_FUZZ_REQUESTS ?? 12_000);
const RUNS = Number(process.env.BENCH_FUZZ_RUNS ?? 3);
const SEED = Number(process.env.FUZZ_SEED ?? 20251125);
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 30_000);
const SNAPSHOT = process.env.BENCH_HEAP_SNAPSHOT === '1';
const CONCURRENCY = 8;

const redis = await startPrivateRedis();
const cwd = mkdtempSync(join(tmpdir(), 'bench-fuzz-memory-'));
const opts = {
  redisUrl: redis.url,
  prefix: uniquePrefix('fuzzmem'),
  cwd,
  env: {
    BATCHLINE_AUTH: 'true',
    BATCHLINE_API_KEYS: fuzzApiKeys(),
    BATCHLINE_MAX_BODY_BYTES: String(MAX_BODY),
    BATCHLINE_HOST: '127.0.0.1',
    BATCHLINE_PORT: '0',
    BATCHLINE_LOG_REQUESTS: 'off',
    BATCHLINE_LOG_LEVEL: 'info',
    ...(SNAPSHOT ? { NODE_OPTIONS: '--heapsnapshot-signal=SIGUSR2' } : {}),
  },
};
const worker = await startWorker('cpu', opts);
const api = await spawnCli(['serve'], opts, /"msg":"API listening"/);
const base = `http://127.0.0.1:${listeningPort(api)}`;
const pid = api.proc.pid!;

const MB = 1024 * 1024;
const rss = (): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
async function heap(): Promise<{ used: number; total: number; external: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const v = (name: string): number => Number(new RegExp(`^${name}\\{[^}]*\\} ([\\d.e+]+)`, 'm').exec(text)?.[1] ?? NaN) / MB;
  return {
    used: v('batchline_process_nodejs_heap_size_used_bytes'),
    total: v('batchline_process_nodejs_heap_size_total_bytes'),
    external: v('batchline_process_nodejs_external_memory_bytes'),
  };
}
const idle = (): Promise<void> => new Promise((r) => setTimeout(r, IDLE_MS));
async function reading(label: string): Promise<{ rss: number; heapUsed: number }> {
  const h = await heap();
  const r = rss();
  console.log(
    `${label.padEnd(26)} rss ${r.toFixed(0).padStart(5)} MB  heap used ${h.used.toFixed(0).padStart(4)} MB of ${h.total.toFixed(0)} MB  external ${h.external.toFixed(0)} MB`,
  );
  return { rss: r, heapUsed: h.used };
}

async function run(seed: number): Promise<Map<string, number>> {
  const r = prng(seed);
  const queue = Array.from({ length: REQUESTS }, () => makeRequest(r));
  const statuses = new Map<string, number>();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < queue.length) {
        const status = await send(base, queue[next++]).catch(() => -1);
        const k = status >= 500 ? String(status) : `${Math.floor(status / 100)}xx`;
        statuses.set(k, (statuses.get(k) ?? 0) + 1);
      }
    }),
  );
  return statuses;
}

try {
  console.log(
    `fuzz memory: ${RUNS} runs of ${REQUESTS} requests (seeds ${SEED}..${SEED + RUNS - 1}), ${CONCURRENCY} at a time; idle readings after ${IDLE_MS} ms; load average ${loadavg()[0].toFixed(1)}`,
  );
  await idle();
  const start = await reading('idle at start');
  for (let k = 0; k < RUNS; k++) {
    const t0 = Date.now();
    const statuses = await run(SEED + k);
    const s = [...statuses].map(([c, n]) => `${c}x${n}`).join(' ');
    await reading(`after run ${k + 1} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    console.log(`  answers: ${s}`);
  }
  await idle();
  const end = await reading('idle at end');
  const released = (api.output().match(/"msg":"idle: memory given back"/g) ?? []).length;
  console.log(`the API gave memory back ${released} time(s) while idle`);
  console.log(
    `idle RSS at end / at start: ${(end.rss / start.rss).toFixed(2)}x; heap used: ${(end.heapUsed / start.heapUsed).toFixed(2)}x`,
  );
  if (SNAPSHOT) {
    api.proc.kill('SIGUSR2');
    await new Promise((r) => setTimeout(r, 20_000));
    console.log(
      `heap snapshot(s) in ${cwd}: ${readdirSync(cwd)
        .filter((f) => f.endsWith('.heapsnapshot'))
        .join(', ')}`,
    );
  }
} finally {
  await api.stop();
  await worker.stop();
  await redis.stop();
}
