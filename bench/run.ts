/**
 * `npm run bench`: what batching buys on the benchmark model (mlp-bench, 512-2048-2048-10),
 * measured in one run on this machine, load from separate processes over the real GraphQL
 * endpoint:
 *   1. the ceiling: onnxruntime-node in-process at batch 1 and at the best batch;
 *   2. full stack, batching off;  3. full stack, fixed batching;
 *   4. full stack, aimd and predictive, while the offered load ramps up.
 * Closed loop (N clients back to back, HTTP `predict`; and WebSocket submit + subscribe)
 * and open loop (constant arrival rate). Rows travel as base64 FP32 tensors (the cheap form
 * for the API to take); the closed loop is also run with rows as JSON lists of numbers.
 * The servers run with NODE_ENV=production, as the Docker image does. CPU per request of
 * every process (API, worker, Redis, load generators) is read from /proc, since all of
 * them share this machine's cores. Shared machines drift: configurations are measured in
 * rounds (closed loop) and passes (open loop) that each visit all of them, and the machine's
 * own speed is probed before every visit. Prints a table and ratios; saves JSON and an SVG
 * plot (first pass) under bench/results/.
 *
 * Options (env): BENCH_QUICK=1 (shorter steps), BENCH_RATES="400,600,..." (offered rows/s),
 * BENCH_REFINE=3 (bisection steps at each configuration's knee), BENCH_REPEATS=3 (rounds of
 * closed-loop runs, and runs of an open-loop step near the SLO; the median counts),
 * BENCH_PASSES=2 (open-loop ramps of each configuration; the mean counts).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { parse, stringify } from 'yaml';
import type { BatchingSpec } from '../core/models/config.ts';
import { startPrivateRedis } from '../harness/private-redis.ts';
import { freePort } from '../cli/local-redis.ts';
import { spawnCli, uniquePrefix, type Child } from '../harness/stack.ts';
import type { LoadResult, LoadSpec } from './load-client.ts';
import { renderChart, type Series } from './plot.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MODEL_DIR = join(ROOT, 'models', 'mlp-bench');
const QUICK = process.env.BENCH_QUICK === '1';
const STEP_MS = QUICK ? 2000 : 4000;
const CLOSED_MS = QUICK ? 3000 : 6000;
/** End-to-end latency objective the adaptive policies are judged by (p99 of `predict`). */
const SLO_MS = 100;
const LOAD_PROCS = 2;
/** Coarse ramp of offered rows/s; REFINE bisection steps then narrow the knee of each configuration. */
const RATES = (process.env.BENCH_RATES ?? '250,500,750,1000,1500,2000,2500,3000,3500,4000,5000').split(',').map(Number);
const REFINE = Number(process.env.BENCH_REFINE ?? 3);
/** Offered rates are rounded to this many rows/s. */
const MIN_GAP = 25;
const CLIENTS = 64;
/** Runs of each closed-loop HTTP measurement, and of an open-loop step whose p99 is near the SLO; the median counts. */
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
/** Open-loop ramps of each configuration, the second in reverse order of configurations; their mean counts. */
const PASSES = Number(process.env.BENCH_PASSES ?? 2);

interface Config {
  name: string;
  batching: BatchingSpec;
}

const CONFIGS: Config[] = [
  { name: 'unbatched', batching: { policy: 'fixed', maxBatchSize: 1, maxDelayMs: 0, sloMs: 50 } },
  { name: 'fixed-16/2ms', batching: { policy: 'fixed', maxBatchSize: 16, maxDelayMs: 2, sloMs: 50 } },
  { name: 'fixed-32/5ms', batching: { policy: 'fixed', maxBatchSize: 32, maxDelayMs: 5, sloMs: 50 } },
  { name: 'fixed-64/10ms', batching: { policy: 'fixed', maxBatchSize: 64, maxDelayMs: 10, sloMs: 50 } },
  // Batch-latency SLO for AIMD; per-request in-worker SLO for predictive. Both well inside SLO_MS.
  { name: 'aimd', batching: { policy: 'aimd', maxBatchSize: 128, maxDelayMs: 5, sloMs: 20 } },
  { name: 'predictive', batching: { policy: 'predictive', maxBatchSize: 128, maxDelayMs: 10, sloMs: 40 } },
];

const log = (msg: string): void => void process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

interface Stats {
  rowsPerSec: number;
  requests: number;
  errors: number;
  dropped: number;
  p50: number;
  p95: number;
  p99: number;
  codes: Record<string, number>;
  /** CPU ms per answered request of each process, where /proc can be read (Linux). */
  cpuMsPerRequest?: Record<string, number>;
  /**
   * Share of the machine's CPU time the hypervisor gave to other guests during the run (the
   * `steal` column of /proc/stat), in percent; NaN where /proc cannot tell. A run with a high
   * figure measured a slower machine, whatever the configuration.
   */
  stealPct?: number;
}

/** /proc/<pid>/stat counts in clock ticks: 100 a second on Linux. */
const CLOCK_TICKS = 100;

/** CPU time (user + system) a process has used so far, in ms; NaN where /proc cannot tell. */
function cpuMsOf(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** Machine-wide CPU ticks so far: stolen by the hypervisor, and all of them. */
function machineTicks(): { steal: number; total: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already inside user and nice)
    return { steal: f[7] ?? NaN, total: f.slice(0, 8).reduce((a, b) => a + b, 0) };
  } catch {
    return { steal: NaN, total: NaN };
  }
}

function summarize(results: LoadResult[], rowsPerRequest: number, windowMs: number): Stats {
  const lat = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const codes: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.codes)) codes[k] = (codes[k] ?? 0) + v;
  return {
    // Over the time the run really took (an open loop's drain included), never less than its window.
    rowsPerSec: (lat.length * rowsPerRequest) / (Math.max(windowMs, ...results.map((r) => r.elapsedMs)) / 1000),
    requests: lat.length,
    errors: results.reduce((s, r) => s + r.errors, 0),
    dropped: results.reduce((s, r) => s + r.dropped, 0),
    p50: percentile(lat, 50),
    p95: percentile(lat, 95),
    p99: percentile(lat, 99),
    codes,
  };
}

/** Runs the load from LOAD_PROCS separate processes; concurrency and rate are split between them. */
async function load(
  spec: Omit<LoadSpec, 'rowWidth' | 'model' | 'maxInFlight'>,
  watch: Record<string, number | undefined> = {},
): Promise<Stats> {
  const before = Object.fromEntries(Object.entries(watch).map(([k, pid]) => [k, cpuMsOf(pid)]));
  const ticks0 = machineTicks();
  const parts = Array.from({ length: LOAD_PROCS }, (_, i) => ({
    ...spec,
    model: 'mlp-bench',
    rowWidth: 512,
    maxInFlight: 4000,
    concurrency: Math.max(1, Math.floor(spec.concurrency / LOAD_PROCS) + (i < spec.concurrency % LOAD_PROCS ? 1 : 0)),
    rate: spec.rate / LOAD_PROCS,
  }));
  const results = await Promise.all(
    parts.map(
      (p) =>
        new Promise<LoadResult>((resolve, reject) => {
          const child = spawn(process.execPath, [join(ROOT, 'bench', 'load-client.ts'), JSON.stringify(p)], {
            stdio: ['ignore', 'pipe', 'inherit'],
          });
          let out = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.on('exit', (code) =>
            code === 0 ? resolve(JSON.parse(out) as LoadResult) : reject(new Error(`load client exited ${code}`)),
          );
        }),
    ),
  );
  const ticks1 = machineTicks();
  const stats = summarize(results, spec.rowsPerRequest, spec.durationMs);
  stats.stealPct = (100 * (ticks1.steal - ticks0.steal)) / (ticks1.total - ticks0.total);
  const perRequest = (ms: number): number => ms / Math.max(1, stats.requests);
  stats.cpuMsPerRequest = {
    ...Object.fromEntries(Object.entries(watch).map(([k, pid]) => [k, perRequest(cpuMsOf(pid) - before[k])])),
    load: perRequest(results.reduce((s, r) => s + r.cpuMs, 0)),
  };
  return stats;
}

const serverCpuMs = (s: Stats): number => ['api', 'worker', 'redis'].reduce((sum, k) => sum + (s.cpuMsPerRequest?.[k] ?? NaN), 0);
const stealText = (s: Stats): string => `steal ${Number.isFinite(s.stealPct) ? s.stealPct!.toFixed(1) : '-'}%`;
const cpuLine = (s: Stats): string =>
  [...Object.entries(s.cpuMsPerRequest ?? {}).map(([k, v]) => `${k} ${v.toFixed(2)}`), stealText(s)].join(', ');

function openSession(): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(join(MODEL_DIR, '1', 'model.onnx'), {
    intraOpNumThreads: availableParallelism(),
    graphOptimizationLevel: 'all',
  });
}

/** Rows/s of onnxruntime-node alone, in this process, at one batch size. */
async function rowsPerSecAt(session: ort.InferenceSession, batch: number, ms: number): Promise<number> {
  const input = new ort.Tensor(
    'float32',
    Float32Array.from({ length: batch * 512 }, () => Math.random()),
    [batch, 512],
  );
  for (let i = 0; i < 5; i++) await session.run({ input });
  let rows = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    await session.run({ input });
    rows += batch;
  }
  return rows / ((performance.now() - t0) / 1000);
}

/** 1. onnxruntime-node alone, in this process: rows/s by batch size. */
async function ceiling(session: ort.InferenceSession): Promise<{ batch: number; rowsPerSec: number }[]> {
  const out: { batch: number; rowsPerSec: number }[] = [];
  for (const batch of [1, 8, 32, 64, 128]) {
    out.push({ batch, rowsPerSec: await rowsPerSecAt(session, batch, QUICK ? 800 : 2000) });
    log(`ceiling batch ${batch}: ${Math.round(out[out.length - 1].rowsPerSec)} rows/s`);
  }
  return out;
}

/**
 * The machine's speed just now, measured without our stack: onnxruntime alone at batch 32,
 * with every server stopped. Cloud machines drift (other tenants' load, often without any CPU
 * time shown as stolen), so the bench takes this before every stack starts: when it moves,
 * configurations compared in one run were measured on machines of different speed.
 */
const machineSpeed = (session: ort.InferenceSession): Promise<number> => rowsPerSecAt(session, 32, QUICK ? 500 : 1000);

function repositoryFor(config: Config): string {
  const dir = mkdtempSync(join(tmpdir(), 'batchline-bench-'));
  mkdirSync(join(dir, 'mlp-bench', '1'), { recursive: true });
  symlinkSync(join(MODEL_DIR, '1', 'model.onnx'), join(dir, 'mlp-bench', '1', 'model.onnx'));
  const base = parse(readFileSync(join(MODEL_DIR, 'config.yaml'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, 'mlp-bench', 'config.yaml'), stringify({ ...base, batching: config.batching, cache: { enabled: false } }));
  return dir;
}

type RampStep = Stats & { offered: number; p99Runs: number[] };

interface ConfigResult {
  name: string;
  batching: BatchingSpec;
  /** Rows as base64 tensors. */
  closedHttp: Stats;
  /** Rows as JSON lists of numbers (`features`). */
  closedHttpJson: Stats;
  /** Rows/s of every closed-loop HTTP run; the figures above are their medians. */
  closedRowsPerSecRuns: { base64: number[]; json: number[] };
  closedWs?: Stats;
  /** Every pass's open-loop ramp (the plot shows the first). */
  ramps: RampStep[][];
  /** Each pass's sustained rows/s within the SLO (see knee). */
  bestWithinSloPasses: number[];
  /** Their mean. */
  bestWithinSlo: number;
  /** machineSpeed before each of this configuration's stacks started, rows/s. */
  machineSpeed: number[];
}

interface Stack {
  base: { url: string; ws: string; rowsPerRequest: number; encoding: 'base64' };
  watch: Record<string, number | undefined>;
}

/** Starts a fresh worker and API for the configuration, warms them up, runs `fn`, and stops them. */
async function withStack<T>(config: Config, redisUrl: string, redisPid: number | undefined, fn: (stack: Stack) => Promise<T>): Promise<T> {
  const models = repositoryFor(config);
  const port = await freePort();
  const opts = {
    redisUrl,
    prefix: uniquePrefix('bench'),
    models,
    env: { BATCHLINE_PORT: String(port), BATCHLINE_HOST: '127.0.0.1', NODE_ENV: 'production' },
  };
  const procs: Child[] = [];
  try {
    procs.push(await spawnCli(['worker', '--pool', 'gpu'], opts, /"msg":"worker started"/));
    procs.push(await spawnCli(['serve'], opts, /"msg":"API listening"/));
    const base = {
      url: `http://127.0.0.1:${port}/graphql`,
      ws: `ws://127.0.0.1:${port}/graphql`,
      rowsPerRequest: 1,
      encoding: 'base64' as const,
    };
    await load({ ...base, transport: 'http', loop: 'closed', concurrency: 16, rate: 0, durationMs: 1000 }); // warm-up
    return await fn({ base, watch: { api: procs[1].proc.pid, worker: procs[0].proc.pid, redis: redisPid } });
  } finally {
    for (const p of procs.reverse()) await p.stop();
  }
}

const CLOSED = { loop: 'closed', concurrency: CLIENTS, rate: 0, durationMs: CLOSED_MS } as const;

/** One closed-loop HTTP run with each row encoding, and a WebSocket run when asked. */
async function closedRound(
  config: Config,
  { base, watch }: Stack,
  round: number,
  withWs: boolean,
): Promise<{ base64: Stats; json: Stats; ws?: Stats }> {
  const out: { base64?: Stats; json?: Stats; ws?: Stats } = {};
  for (const encoding of ['base64', 'json'] as const) {
    const s = await load({ ...base, ...CLOSED, transport: 'http', encoding }, watch);
    out[encoding] = s;
    log(
      `${config.name}: closed loop HTTP, ${CLIENTS} clients, ${encoding === 'json' ? 'JSON' : 'base64'} rows, round ${round + 1}: ${Math.round(s.rowsPerSec)} rows/s, p50 ${s.p50.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms, errors ${s.errors}; CPU ms/request: ${cpuLine(s)}`,
    );
  }
  if (withWs) {
    out.ws = await load({ ...base, ...CLOSED, transport: 'ws' }, watch);
    log(
      `${config.name}: closed loop WebSocket submit+subscribe, ${CLIENTS} clients: ${Math.round(out.ws.rowsPerSec)} rows/s, p99 ${out.ws.p99.toFixed(1)} ms, errors ${out.ws.errors}; CPU ms/request: ${cpuLine(out.ws)}`,
    );
  }
  return out as { base64: Stats; json: Stats; ws?: Stats };
}

/** The run in the middle when sorted by `by` (the lower middle of an even count). */
const medianBy = (runs: Stats[], by: (s: Stats) => number): Stats =>
  [...runs].sort((a, b) => by(a) - by(b))[Math.floor((runs.length - 1) / 2)];

const meets = (st: Stats): boolean => st.p99 <= SLO_MS && st.errors === 0 && st.dropped === 0;

/**
 * Where a ramp stops meeting the SLO: the lowest offered rate that missed it, the highest
 * offered rate below that which met it, and the rows/s achieved there (the sustained figure; a
 * step that passes above a failing one was lucky, not sustained).
 */
function knee(ramp: RampStep[]): { firstBad: number; lastOk: number; sustained: number } {
  const firstBad = Math.min(...ramp.filter((r) => !meets(r)).map((r) => r.offered));
  const ok = ramp.filter((r) => meets(r) && r.offered < firstBad);
  return { firstBad, lastOk: Math.max(0, ...ok.map((r) => r.offered)), sustained: Math.max(0, ...ok.map((r) => r.rowsPerSec)) };
}

/** The open-loop ramp of one configuration: coarse steps, then bisection at the knee. */
async function rampOf(config: Config, { base }: Stack, pass: number): Promise<RampStep[]> {
  const ramp: RampStep[] = [];
  const step = async (rate: number): Promise<Stats> => {
    // A step far from the SLO line runs once; one near it runs REPEATS times and the run with
    // the median p99 stands for it, so one stall of the shared cores does not move the knee.
    const run = (): Promise<Stats> => load({ ...base, transport: 'http', loop: 'open', concurrency: 0, rate, durationMs: STEP_MS });
    const runs: Stats[] = [await run()];
    if (runs[0].p99 > SLO_MS / 2 && runs[0].p99 < 2 * SLO_MS) for (let i = 1; i < REPEATS; i++) runs.push(await run());
    const s = medianBy(runs, (r) => r.p99);
    ramp.push({ ...s, offered: rate, p99Runs: runs.map((r) => r.p99) });
    log(
      `${config.name} (pass ${pass + 1}): offered ${rate} rows/s -> ${Math.round(s.rowsPerSec)} rows/s, p50 ${s.p50.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms (runs: ${runs.map((r) => r.p99.toFixed(0)).join(', ')}), errors ${s.errors}, dropped ${s.dropped}, ${stealText(s)}`,
    );
    return s;
  };
  for (const rate of RATES) {
    const s = await step(rate);
    // Far past saturation the numbers only measure the queue; stop the ramp there.
    if (s.p99 > 20 * SLO_MS) break;
  }
  // The coarse ramp brackets the knee; bisect between the lowest failing offered rate and the
  // highest passing one below it, so configurations are compared to ~1/8 of a coarse step.
  for (let i = 0; i < REFINE; i++) {
    const { firstBad, lastOk } = knee(ramp);
    if (!Number.isFinite(firstBad) || firstBad - lastOk < 2 * MIN_GAP) break;
    await step(Math.round((lastOk + firstBad) / 2 / MIN_GAP) * MIN_GAP);
  }
  return ramp.sort((a, b) => a.offered - b.offered);
}

/**
 * Every configuration, measured so that a drift of the machine's speed falls on all of them
 * alike: the closed-loop runs go in REPEATS rounds, each visiting every configuration (the
 * order reversed every other round), and the open-loop ramps in PASSES passes, the second in
 * reverse order. Each visit starts a fresh stack, after a probe of the machine's speed.
 */
async function measure(session: ort.InferenceSession, redisUrl: string, redisPid: number | undefined): Promise<ConfigResult[]> {
  const closed = new Map<string, { base64: Stats[]; json: Stats[]; ws?: Stats }>(CONFIGS.map((c) => [c.name, { base64: [], json: [] }]));
  const ramps = new Map<string, RampStep[][]>(CONFIGS.map((c) => [c.name, []]));
  const speeds = new Map<string, number[]>(CONFIGS.map((c) => [c.name, []]));
  const visit = async <T>(c: Config, fn: (stack: Stack) => Promise<T>): Promise<T> => {
    const speed = await machineSpeed(session);
    speeds.get(c.name)!.push(speed);
    log(`${c.name}: machine speed (onnxruntime alone, batch 32) ${Math.round(speed)} rows/s`);
    return withStack(c, redisUrl, redisPid, fn);
  };
  const order = (i: number): Config[] => (i % 2 === 0 ? CONFIGS : [...CONFIGS].reverse());
  for (let round = 0; round < Math.max(1, REPEATS); round++) {
    for (const c of order(round)) {
      const r = await visit(c, (stack) =>
        closedRound(c, stack, round, round === 0 && (c.name === 'unbatched' || c.name === 'fixed-32/5ms')),
      );
      const into = closed.get(c.name)!;
      into.base64.push(r.base64);
      into.json.push(r.json);
      into.ws ??= r.ws;
    }
  }
  for (let pass = 0; pass < Math.max(1, PASSES); pass++) {
    for (const c of order(pass)) ramps.get(c.name)!.push(await visit(c, (stack) => rampOf(c, stack, pass)));
  }
  return CONFIGS.map((c) => {
    const cl = closed.get(c.name)!;
    const rs = ramps.get(c.name)!;
    const passes = rs.map((ramp) => knee(ramp).sustained);
    return {
      name: c.name,
      batching: c.batching,
      closedHttp: medianBy(cl.base64, (r) => r.rowsPerSec),
      closedHttpJson: medianBy(cl.json, (r) => r.rowsPerSec),
      closedRowsPerSecRuns: { base64: cl.base64.map((r) => r.rowsPerSec), json: cl.json.map((r) => r.rowsPerSec) },
      closedWs: cl.ws,
      ramps: rs,
      bestWithinSloPasses: passes,
      bestWithinSlo: passes.reduce((a, b) => a + b, 0) / passes.length,
      machineSpeed: speeds.get(c.name)!,
    };
  });
}

const fmt = (n: number, d = 0): string => (Number.isFinite(n) ? n.toFixed(d) : '-');
/** The lowest and highest of a figure's runs. */
const spread = (runs: number[]): string => `${fmt(Math.min(...runs))}-${fmt(Math.max(...runs))}`;

async function main(): Promise<void> {
  log(`machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}; SLO p99 <= ${SLO_MS} ms`);
  const session = await openSession();
  const ceil = await ceiling(session);
  const redis = await startPrivateRedis();
  let results: ConfigResult[];
  try {
    results = await measure(session, redis.url, redis.pid);
  } finally {
    await redis.stop();
    await session.release();
  }

  const c1 = ceil.find((c) => c.batch === 1)!.rowsPerSec;
  const cBest = Math.max(...ceil.map((c) => c.rowsPerSec));
  const unbatched = results.find((r) => r.name === 'unbatched')!;
  const fixed = results.filter((r) => r.name.startsWith('fixed'));
  const bestFixedClosed = fixed.reduce((a, b) => (b.closedHttp.rowsPerSec > a.closedHttp.rowsPerSec ? b : a));
  const bestFixedJson = fixed.reduce((a, b) => (b.closedHttpJson.rowsPerSec > a.closedHttpJson.rowsPerSec ? b : a));
  const bestFixedSlo = fixed.reduce((a, b) => (b.bestWithinSlo > a.bestWithinSlo ? b : a));
  const lines: string[] = [];
  lines.push(
    `\nCeiling (onnxruntime-node in-process, ${availableParallelism()} intra-op threads): ${ceil.map((c) => `batch ${c.batch}: ${fmt(c.rowsPerSec)} rows/s`).join(', ')}`,
  );
  lines.push(
    `\nClosed loop: ${CLIENTS} clients, 1 row per request; each HTTP figure is the median of ${Math.max(1, REPEATS)} runs, one per round of all configurations (lowest-highest in brackets). Open loop: the mean over ${Math.max(1, PASSES)} passes of the ramp (each pass's figure in brackets). CPU: ms per request of each process (api, worker, redis, load generators) in the median base64 HTTP run, and the share of the machine's CPU time the hypervisor stole meanwhile.`,
  );
  lines.push(
    `\n| configuration | HTTP rows/s (base64 rows) | p50 ms | p95 ms | p99 ms | HTTP rows/s (JSON rows) | WS submit+subscribe rows/s (p99 ms) | sustained open-loop rows/s with p99 <= ${SLO_MS} ms | CPU ms/request |`,
  );
  lines.push('|---|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    const w = r.closedWs ? `${fmt(r.closedWs.rowsPerSec)} (${fmt(r.closedWs.p99, 1)})` : '';
    lines.push(
      `| ${r.name} | ${fmt(r.closedHttp.rowsPerSec)} (${spread(r.closedRowsPerSecRuns.base64)}) | ${fmt(r.closedHttp.p50, 1)} | ${fmt(r.closedHttp.p95, 1)} | ${fmt(r.closedHttp.p99, 1)} | ${fmt(r.closedHttpJson.rowsPerSec)} (${spread(r.closedRowsPerSecRuns.json)}) | ${w} | ${fmt(r.bestWithinSlo)} (${r.bestWithinSloPasses.map((v) => fmt(v)).join(', ')}) | ${cpuLine(r.closedHttp)} |`,
    );
  }
  const speeds = results.flatMap((r) => r.machineSpeed);
  lines.push(
    `\nMachine speed (onnxruntime alone in the bench process, batch 32, before each stack started), rows/s: ${results.map((r) => `${r.name} ${r.machineSpeed.map((v) => fmt(v)).join('/')}`).join(', ')}`,
  );
  const ratios = {
    ceilingBatchedOverBatch1: cBest / c1,
    batchedOverUnbatchedClosed: bestFixedClosed.closedHttp.rowsPerSec / unbatched.closedHttp.rowsPerSec,
    batchedOverUnbatchedClosedJson: bestFixedJson.closedHttpJson.rowsPerSec / unbatched.closedHttpJson.rowsPerSec,
    // NaN (printed '-') where the baseline never met the SLO: a ratio to zero says nothing.
    batchedOverUnbatchedWithinSlo: unbatched.bestWithinSlo > 0 ? bestFixedSlo.bestWithinSlo / unbatched.bestWithinSlo : NaN,
    fullStackOverCeiling: bestFixedClosed.closedHttp.rowsPerSec / cBest,
    aimdOverBestFixedWithinSlo:
      bestFixedSlo.bestWithinSlo > 0 ? results.find((r) => r.name === 'aimd')!.bestWithinSlo / bestFixedSlo.bestWithinSlo : NaN,
    // Noise-resistant companion to the throughput ratios: CPU the servers (API + worker + Redis) spend per row.
    serverCpuPerRowUnbatchedOverBatched: serverCpuMs(unbatched.closedHttp) / serverCpuMs(bestFixedClosed.closedHttp),
    predictiveOverBestFixedWithinSlo:
      bestFixedSlo.bestWithinSlo > 0 ? results.find((r) => r.name === 'predictive')!.bestWithinSlo / bestFixedSlo.bestWithinSlo : NaN,
    // How far the machine itself drifted over the run (fastest / slowest probe, minus one).
    machineSpeedDrift: Math.max(...speeds) / Math.min(...speeds) - 1,
  };
  lines.push(`\nRatios:`);
  lines.push(`- ceiling, best batch / batch 1: ${fmt(ratios.ceilingBatchedOverBatch1, 2)}x`);
  lines.push(
    `- full stack, best fixed batching (${bestFixedClosed.name}) / unbatched, closed loop, base64 rows: ${fmt(ratios.batchedOverUnbatchedClosed, 2)}x`,
  );
  lines.push(
    `- full stack, best fixed batching (${bestFixedJson.name}) / unbatched, closed loop, JSON rows: ${fmt(ratios.batchedOverUnbatchedClosedJson, 2)}x`,
  );
  lines.push(
    `- full stack, best fixed (${bestFixedSlo.name}) / unbatched, open loop within the SLO: ${fmt(ratios.batchedOverUnbatchedWithinSlo, 2)}x`,
  );
  lines.push(
    `- server CPU per row (API + worker + Redis), unbatched / ${bestFixedClosed.name}: ${fmt(serverCpuMs(unbatched.closedHttp), 2)} / ${fmt(serverCpuMs(bestFixedClosed.closedHttp), 2)} ms = ${fmt(ratios.serverCpuPerRowUnbatchedOverBatched, 2)}x`,
  );
  lines.push(`- full stack (${bestFixedClosed.name}) / ceiling at its best batch: ${fmt(ratios.fullStackOverCeiling, 2)}`);
  lines.push(`- aimd / best fixed meeting the SLO: ${fmt(ratios.aimdOverBestFixedWithinSlo, 2)}`);
  lines.push(`- predictive / best fixed meeting the SLO: ${fmt(ratios.predictiveOverBestFixedWithinSlo, 2)}`);
  lines.push(`- machine speed drift over the run (fastest / slowest probe - 1): ${fmt(100 * ratios.machineSpeedDrift)}%`);
  // Beyond a tenth, ratios between configurations carry more of the machine's drift than the targets allow for.
  if (ratios.machineSpeedDrift > 0.1)
    lines.push(
      `\nWARNING: the machine's own speed moved ${fmt(100 * ratios.machineSpeedDrift)}% during this run. Rounds and passes spread every configuration over the run, but a ratio within that much of its target is not settled by this run.`,
    );
  const report = lines.join('\n');
  console.log(report);

  const outDir = join(ROOT, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const json = {
    date: new Date().toISOString(),
    machine: { cores: availableParallelism(), cpu: cpus()[0]?.model, node: process.version },
    sloMs: SLO_MS,
    quick: QUICK,
    ceiling: ceil,
    results,
    ratios,
  };
  writeFileSync(join(outDir, `bench-${stamp}.json`), JSON.stringify(json, null, 2));
  writeFileSync(join(outDir, 'latest.json'), JSON.stringify(json, null, 2));
  writeFileSync(join(outDir, 'latest.md'), report + '\n');
  const series = (pick: (s: RampStep) => number): Series[] =>
    results.map((r) => ({ name: r.name, points: r.ramps[0].map((s) => ({ x: s.offered, y: pick(s) })) }));
  writeFileSync(
    join(outDir, 'latest.svg'),
    renderChart(
      series((s) => s.rowsPerSec),
      series((s) => Math.min(s.p99, 10 * SLO_MS)),
      SLO_MS,
      `batchline bench ${json.date}, first pass (p99 clipped at ${10 * SLO_MS} ms)`,
    ),
  );
  log(`saved bench/results/latest.{json,md,svg} and bench-${stamp}.json`);
}

await main();
process.exit(0);
