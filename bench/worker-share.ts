/**
 * `npm run bench:worker-share` (issue 25 item 6): the worker's CPU per row against the
 * in-process onnxruntime ceiling's CPU per row at the batch size the worker actually formed.
 *
 * One run: a private Redis, one `gpu`-pool worker (mlp-bench's pool, on CPU here) and the API;
 * mlp-bench predicts, one 512-float row each as a base64 FP32 tensor, closed loop at
 * BENCH_CONNECTIONS (64) concurrent requests from bench/load-client.ts, for BENCH_SECONDS (10).
 * The worker's CPU comes from /proc (every thread: event loop, inference threads, onnxruntime's
 * intra-op threads); its rows and inferences from its own metrics. Then, with the stack
 * stopped, onnxruntime-node alone in this process (2 intra-op threads, as bench/ceiling.ts) runs
 * batches of the size the worker formed, and its CPU per row is the ceiling. Rounds alternate
 * stack and ceiling (BENCH_ROUNDS, default 2); medians are printed with every round's figures.
 * BENCH_CPU_PROF=<dir> writes the worker's --cpu-prof profiles there. BENCH_BASELINE=<checkout>
 * runs that checkout's worker too, in every round (order alternating), against the same ceiling:
 * before and after in one run, e.g. `git worktree add /tmp/ws-base <commit>` with node_modules linked.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { Redis } from 'ioredis';
import {
  benchDir,
  cpuMsOf,
  cpuMsOfStat,
  freePort,
  redisWork,
  redisWorkBetween,
  ROOT,
  runLoadClients,
  startCli,
  startRedis,
  type Proc,
} from './processes.ts';
import { metricSum, scrape } from './prometheus.ts';
import type { LoadSpec } from './load-client.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 2));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const CEILING_SECONDS = Number(process.env.BENCH_CEILING_SECONDS ?? 3);
const PROF = process.env.BENCH_CPU_PROF;
const MODEL = 'mlp-bench';
const WIDTH = 512;

const log = (msg: string): void => void process.stderr.write(`[bench:worker-share ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

interface StackRun {
  requests: number;
  errors: number;
  rows: number;
  inferences: number;
  rowsPerInference: number;
  /** BullMQ jobs the worker took per inference (the API's edge batches each make one job). */
  jobsPerInference: number;
  /** Worker CPU ms per row by thread name (ended threads drop out: a sum may fall short of the whole). */
  threadCpuMsPerRow: Record<string, number>;
  /** Context switches of the worker's threads per inference. */
  switchesPerInference: { voluntary: number; involuntary: number };
  /** Redis commands per worker job (the API's and the worker's together: every command of the run). */
  redisCallsPerJob: Record<string, number>;
  workerCpuMsPerRow: number;
  /** onnxruntime intra-op threads of the worker's sessions (its "worker started" line). */
  intraOpThreads: number;
}

/** CPU ms of a process's threads so far, by thread name (MainThread, inference, V8Worker for GC and compiling, ...). */
function cpuByThread(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      out[name] = (out[name] ?? 0) + cpuMsOfStat(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
    } catch {
      // a thread that ended meanwhile
    }
  }
  return out;
}

/** Context switches of every thread of a process so far (voluntary, involuntary). */
function switchesOf(pid: number): { voluntary: number; involuntary: number } {
  let voluntary = 0;
  let involuntary = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const st = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      voluntary += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(st)?.[1] ?? 0);
      involuntary += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(st)?.[1] ?? 0);
    } catch {
      // a thread that ended meanwhile
    }
  }
  return { voluntary, involuntary };
}

async function stackRun(redis: Redis, redisUrl: string, dir: string, n: number, root?: string): Promise<StackRun> {
  const [port, workerPort, grpcPort] = [await freePort(), await freePort(), await freePort()];
  const env: Record<string, string> = {
    BATCHLINE_REDIS_URL: redisUrl,
    BATCHLINE_REDIS_PREFIX: `bench-worker-share-${n}`,
    BATCHLINE_MODELS: join(ROOT, 'models'),
    BATCHLINE_PORT: String(port),
    BATCHLINE_GRPC_PORT: String(grpcPort),
    BATCHLINE_HOST: '127.0.0.1',
    NODE_ENV: 'production',
  };
  const workerEnv = {
    ...env,
    BATCHLINE_WORKER_HTTP_PORT: String(workerPort),
    ...(PROF ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${PROF}` } : {}),
  };
  const procs: Proc[] = [];
  try {
    procs.push(await startCli('worker-gpu', ['worker', '--pool', 'gpu'], workerEnv, dir, /"msg":"worker started"/, root));
    procs.push(await startCli('api', ['serve'], env, dir, /"msg":"API listening"/));
    const worker = procs[0];
    const started = readFileSync(worker.logFile, 'utf8')
      .split('\n')
      .find((l) => l.includes('"msg":"worker started"'));
    const intraOpThreads = Number((JSON.parse(started ?? '{}') as { intraOpThreads?: number }).intraOpThreads ?? 1);
    const metricsUrl = `http://127.0.0.1:${workerPort}/metrics`;
    const spec = (durationMs: number, concurrency: number): LoadSpec => ({
      url: `http://127.0.0.1:${port}/graphql`,
      ws: `ws://127.0.0.1:${port}/graphql`,
      model: MODEL,
      rowWidth: WIDTH,
      rowsPerRequest: 1,
      encoding: 'base64',
      transport: 'http',
      loop: 'closed',
      concurrency,
      rate: 0,
      durationMs,
      maxInFlight: concurrency,
    });
    // Warm-up: the worker's code paths compiled, the API's connections open.
    await runLoadClients([spec(2000, CONNECTIONS)]);
    await sleep(500);
    const [cpu0, th0, sw0, m0, r0] = [
      cpuMsOf(worker.pid),
      cpuByThread(worker.pid),
      switchesOf(worker.pid),
      await scrape(metricsUrl),
      await redisWork(redis),
    ];
    const [load] = await runLoadClients([spec(SECONDS * 1000, CONNECTIONS)]);
    await sleep(500);
    const [cpu1, th1, sw1, m1, r1] = [
      cpuMsOf(worker.pid),
      cpuByThread(worker.pid),
      switchesOf(worker.pid),
      await scrape(metricsUrl),
      await redisWork(redis),
    ];
    const delta = (name: string): number => metricSum(m1, name, { model: MODEL }) - metricSum(m0, name, { model: MODEL });
    const rows = delta('batchline_batch_rows_sum');
    const inferences = delta('batchline_batch_rows_count');
    if (load.errors) log(`client errors ${JSON.stringify(load.codes)}`);
    return {
      requests: load.latencies.length,
      errors: load.errors,
      rows,
      inferences,
      rowsPerInference: rows / inferences,
      jobsPerInference: delta('batchline_worker_jobs_total') / inferences,
      threadCpuMsPerRow: Object.fromEntries(
        Object.keys(th1)
          .map((k) => [k, Math.round((1000 * (th1[k] - (th0[k] ?? 0))) / rows) / 1000] as const)
          .filter(([, v]) => v > 0),
      ),
      switchesPerInference: {
        voluntary: (sw1.voluntary - sw0.voluntary) / inferences,
        involuntary: (sw1.involuntary - sw0.involuntary) / inferences,
      },
      redisCallsPerJob: Object.fromEntries(
        Object.entries(redisWorkBetween(r0, r1).calls)
          .map(([k, v]) => [k, Math.round((100 * v) / delta('batchline_worker_jobs_total')) / 100] as const)
          .sort((a, b) => b[1] - a[1]),
      ),
      workerCpuMsPerRow: (cpu1 - cpu0) / rows,
      intraOpThreads,
    };
  } finally {
    for (const p of procs.reverse()) await p.stop();
  }
}

/**
 * onnxruntime-node alone in this process at `batch` rows a run: CPU ms per row (every thread of
 * the process) and wall ms per row. `as: 'worker'` opens the session as the worker does
 * (core/runtime/providers.ts sessionOptions: its intra-op threads, no spinning), the same
 * inference the worker pays for; `as: 'ceiling'` as bench/ceiling.ts does (2 spinning intra-op threads).
 */
async function ceiling(
  batch: number,
  as: 'worker' | 'ceiling',
  intraOpThreads: number,
): Promise<{ cpuMsPerRow: number; wallMsPerRow: number }> {
  const session = await InferenceSession.create(
    join(ROOT, 'models', MODEL, '1', 'model.onnx'),
    as === 'worker'
      ? {
          executionProviders: ['cpu'],
          intraOpNumThreads: intraOpThreads,
          interOpNumThreads: 1,
          graphOptimizationLevel: 'all',
          extra: { session: { intra_op: { allow_spinning: '0' } } },
        }
      : { intraOpNumThreads: 2, interOpNumThreads: 1, executionProviders: ['cpu'] },
  );
  try {
    const data = new Float32Array(batch * WIDTH).map(() => Math.random() * 2 - 1);
    const feeds = { input: new Tensor('float32', data, [batch, WIDTH]) };
    for (let i = 0; i < 10; i++) await session.run(feeds);
    let rows = 0;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    while (performance.now() - t0 < CEILING_SECONDS * 1000) {
      await session.run(feeds);
      rows += batch;
    }
    const c = process.cpuUsage(c0);
    return { cpuMsPerRow: (c.user + c.system) / 1000 / rows, wallMsPerRow: (performance.now() - t0) / rows };
  } finally {
    await session.release();
  }
}

const BASELINE = process.env.BENCH_BASELINE;

type Measured = StackRun & {
  which: 'this' | 'baseline';
  round: number;
  batch: number;
  inferenceCpuMsPerRow: number;
  ratio: number;
  ceilingCpuMsPerRow: number;
  ceilingWallMsPerRow: number;
};

const dir = benchDir();
const redis = await startRedis(dir);
const client = new Redis(redis.url);
const runs: Measured[] = [];
try {
  for (let r = 0; r < ROUNDS; r++) {
    // With a baseline, the two alternate which goes first: a shared machine's speed drifts.
    const order: ('this' | 'baseline')[] = !BASELINE ? ['this'] : r % 2 === 0 ? ['this', 'baseline'] : ['baseline', 'this'];
    for (const which of order) {
      await client.flushall();
      log(`round ${r + 1}/${ROUNDS} (${which}): stack, ${CONNECTIONS} concurrent, ${SECONDS}s`);
      const run = await stackRun(client, redis.url, dir, runs.length, which === 'baseline' ? BASELINE : undefined);
      const batch = Math.max(1, Math.round(run.rowsPerInference));
      log(`round ${r + 1}/${ROUNDS} (${which}): in-process inference at batch ${batch}`);
      const same = await ceiling(batch, 'worker', run.intraOpThreads);
      const c = await ceiling(batch, 'ceiling', 2);
      runs.push({
        ...run,
        which,
        round: r + 1,
        batch,
        inferenceCpuMsPerRow: same.cpuMsPerRow,
        ratio: run.workerCpuMsPerRow / same.cpuMsPerRow,
        ceilingCpuMsPerRow: c.cpuMsPerRow,
        ceilingWallMsPerRow: c.wallMsPerRow,
      });
    }
  }
} finally {
  client.disconnect();
  await redis.stop();
}
const f = (x: number, d = 3): string => x.toFixed(d);
for (const r of runs)
  console.log(
    `round ${r.round} ${r.which}: ${r.requests} requests (${r.errors} errors), ${f(r.rowsPerInference, 1)} rows/inference, ${f(r.jobsPerInference, 2)} jobs/inference, ${f(r.switchesPerInference.voluntary, 1)}+${f(r.switchesPerInference.involuntary, 1)} context switches/inference (voluntary+not); worker ${f(r.workerCpuMsPerRow)} ms CPU/row; ` +
      `in-process inference as the worker runs it (batch ${r.batch}, ${r.intraOpThreads} intra-op, no spinning) ${f(r.inferenceCpuMsPerRow)} ms CPU/row; ratio ${f(r.ratio, 2)}; ` +
      `bench/ceiling.ts session (2 spinning threads) ${f(r.ceilingCpuMsPerRow)} ms CPU/row, ${f(r.ceilingWallMsPerRow)} ms wall/row`,
  );
type Key = 'workerCpuMsPerRow' | 'inferenceCpuMsPerRow' | 'ratio' | 'ceilingCpuMsPerRow' | 'ceilingWallMsPerRow';
for (const which of ['this', 'baseline'] as const) {
  const mine = runs.filter((r) => r.which === which);
  if (!mine.length) continue;
  const med = (k: Key): number => median(mine.map((r) => r[k]));
  const range = (k: Key, d = 3): string => `${f(Math.min(...mine.map((r) => r[k])), d)}-${f(Math.max(...mine.map((r) => r[k])), d)}`;
  console.log(
    `median ${which}: worker ${f(med('workerCpuMsPerRow'))} ms CPU/row (${range('workerCpuMsPerRow')}); in-process inference ${f(med('inferenceCpuMsPerRow'))} ms CPU/row; ` +
      `worker / inference ${f(med('ratio'), 2)} (${range('ratio', 2)}; target <= 1.3); worker beyond inference ${f(med('workerCpuMsPerRow') - med('inferenceCpuMsPerRow'))} ms CPU/row; ` +
      `ceiling.ts session ${f(med('ceilingCpuMsPerRow'))} ms CPU/row, ${f(med('ceilingWallMsPerRow'))} ms wall/row`,
  );
}
if (BASELINE) {
  const byRound = runs
    .filter((r) => r.which === 'this')
    .map((t) => t.workerCpuMsPerRow / runs.find((b) => b.which === 'baseline' && b.round === t.round)!.workerCpuMsPerRow);
  console.log(`worker CPU/row this / baseline, same round: median ${f(median(byRound), 2)} (${byRound.map((x) => f(x, 2)).join(', ')})`);
}
for (const r of runs)
  console.log(
    `round ${r.round} ${r.which}: worker CPU ms/row by thread ${JSON.stringify(r.threadCpuMsPerRow)}; Redis calls per job ${JSON.stringify(r.redisCallsPerJob)}`,
  );
console.log(JSON.stringify({ seconds: SECONDS, connections: CONNECTIONS, baseline: BASELINE ?? null, runs }));
if (PROF) log(`worker profiles in ${PROF}`);
