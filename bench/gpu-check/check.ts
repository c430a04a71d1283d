/**
 * The GPU check (scripts/gpu-check.sh runs it, after bringing Node, onnxruntime and the Vulkan
 * loader to a bare machine). In one run, bounded by --budget-seconds:
 *   1. probe: a WebGPU session in a process of its own; if no adapter answers, again with each
 *      Vulkan driver file found (VK_DRIVER_FILES), and with why it failed when none does;
 *   2. bench: each demo model at batch 1, 8, 32, 128, 512, 1024 on WebGPU and on CPU, rows/s
 *      and p50/p99 of a run, the two providers interleaved round by round;
 *   3. correctness: each model's outputs on WebGPU against CPU within the stated tolerance
 *      (bench/gpu-check/tolerance.ts), at batch 1, 37 and 256;
 *   4. profile: mlp-bench's run time by batch size on WebGPU as a simulator profile
 *      (bench/profiles/ format), and what the capacity planner makes of it beside gpu-like;
 *   5. serve: the gpu pool (API, worker, Redis as `npm start` runs them) on WebGPU, open-loop
 *      single-row requests for --serve-seconds with batching, then --unbatched-seconds
 *      without, and the throughput of each.
 * Everything printed also goes into one JSON file in --out-dir. Exits 0 when every step ran
 * and passed.
 *
 * --cpu-only runs the same steps with CPU in WebGPU's place and short durations: it checks the
 * check, on any machine, in CI-sized time (correctness then compares two CPU sessions, which
 * says nothing about a GPU and is labelled so).
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, release, tmpdir, totalmem } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { stringify } from 'yaml';
import { DEFAULT_CONFIG } from '../../core/config/settings.ts';
import type { BatchingSpec } from '../../core/models/config.ts';
import { ModelRepository, type ModelVersion } from '../../core/models/repository.ts';
import { charNgramFeatures } from '../../core/preprocess/char-ngrams.ts';
import { sessionOptions, type ProviderName } from '../../core/runtime/providers.ts';
import { EXTRA_ICD_CANDIDATES, explainNoAdapter, vulkanSetup, type VulkanSetup } from '../../core/runtime/vulkan.ts';
import { planCapacity } from '../../core/simulation/capacity.ts';
import { loadProfile, ServiceModel, type Profile } from '../../core/simulation/service.ts';
import { label } from '../../core/simulation/configurations.ts';
import { measureProfile } from '../profile.ts';
import { cpuMsOf, freePort, runLoadClients, startCli, startRedis, type Proc } from '../processes.ts';
import type { LoadResult, LoadSpec } from '../load-client.ts';
import { compareOutputs, DEFAULT_TOLERANCE, TOLERANCES, type Comparison, type Tolerance } from './tolerance.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MODELS_DIR = join(ROOT, 'models');
const PROFILES_DIR = join(ROOT, 'bench', 'profiles');
/** The demo models, benchmarked and checked; mlp-bench is the gpu pool's (and the served one). */
const MODELS = ['mlp-bench', 'spam-mlp', 'name-gender'];
const CORRECTNESS_ROWS = [1, 37, 256];
const PREDICT_TIMEOUT_MS = 10_000;
/**
 * Batching of the served phase: predictive keeps gathering while the GPU is busy and sends
 * when the predicted run would still meet the SLO; a fixed delay would send tiny batches to
 * wait behind a slow run. The unbatched phase runs one row at a time.
 */
const BATCHED: BatchingSpec = { policy: 'predictive', maxBatchSize: 256, maxDelayMs: 10, sloMs: 50 };
/** Seconds a serve phase takes besides its load: a worker and an API started, the warm-up load, the last requests' deadline. */
const PHASE_OVERHEAD_S = 20 + PREDICT_TIMEOUT_MS / 1000;

const { values: args } = parseArgs({
  options: {
    'cpu-only': { type: 'boolean', default: false },
    'out-dir': { type: 'string' },
    'bench-ms': { type: 'string' },
    rounds: { type: 'string' },
    'serve-seconds': { type: 'string' },
    'unbatched-seconds': { type: 'string' },
    rate: { type: 'string' },
    'profile-rounds': { type: 'string' },
    'budget-seconds': { type: 'string' },
    batches: { type: 'string' },
  },
  strict: true,
});
const CPU_ONLY = args['cpu-only'];
const num = (v: string | undefined, gpu: number, cpuOnly: number): number => (v !== undefined ? Number(v) : CPU_ONLY ? cpuOnly : gpu);
const opts = {
  outDir: args['out-dir'] ?? join(ROOT, 'bench', 'results', 'gpu-check'),
  benchMs: num(args['bench-ms'], 300, 40),
  rounds: num(args.rounds, 3, 1),
  serveSeconds: num(args['serve-seconds'], 60, 2),
  unbatchedSeconds: num(args['unbatched-seconds'], 30, 2),
  rate: args.rate !== undefined ? Number(args.rate) : undefined,
  profileRounds: num(args['profile-rounds'], 3, 1),
  budgetSeconds: num(args['budget-seconds'], 420, 300),
};
/** Batch sizes of the bench; the profile measures powers of two up to the largest. */
const BATCHES = (args.batches ?? '1,8,32,128,512,1024').split(',').map(Number);
if (!BATCHES.every((b) => Number.isInteger(b) && b >= 1)) throw new Error(`--batches must be a list of whole numbers, got ${args.batches}`);
/** The provider under test: WebGPU, or CPU in its place in --cpu-only mode. */
const CANDIDATE: ProviderName = CPU_ONLY ? 'cpu' : 'webgpu';
const PROVIDERS: ProviderName[] = CPU_ONLY ? ['cpu'] : ['cpu', 'webgpu'];

const started = Date.now();
const left = (): number => opts.budgetSeconds - (Date.now() - started) / 1000;
const report: Record<string, unknown> & { log: string[]; failures: string[] } = {
  check: 'batchline scripts/gpu-check.sh',
  mode: CPU_ONLY ? 'cpu-only' : 'gpu',
  startedAt: new Date(started).toISOString(),
  options: opts,
  log: [],
  failures: [],
};
function say(line = ''): void {
  report.log.push(line);
  process.stdout.write(`${line}\n`);
}
const f = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : '-');
const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** A seeded generator, so both providers (and reruns) see the same inputs. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `rows` rows of inputs shaped like what the model is served: text through its preprocessing, hashed word counts, or dense values. */
function inputRows(mv: ModelVersion, rows: number, seed: number): Float32Array {
  const r = rng(seed);
  const spec = mv.config.inputs[0];
  const width = spec.shape[1];
  const out = new Float32Array(rows * width);
  const pre = mv.config.preprocessing;
  if (pre) {
    const letters = 'aeiourstlnmkdhbcgyjpvwfz';
    for (let i = 0; i < rows; i++) {
      const name = Array.from({ length: 3 + Math.floor(r() * 7) }, () => letters[Math.floor(r() * r() * letters.length)]).join('');
      charNgramFeatures(name, pre, out.subarray(i * width, (i + 1) * width));
    }
  } else if (mv.name === 'spam-mlp') {
    // Signed log counts of hashed words (scripts/models/spam-dataset.ts), about a fifth of the buckets hit.
    for (let i = 0; i < out.length; i++) if (r() < 0.2) out[i] = (r() < 0.5 ? -1 : 1) * Math.log1p(1 + Math.floor(r() * 6));
  } else {
    for (let i = 0; i < out.length; i++) out[i] = r() * 2 - 1;
  }
  return out;
}

function feeds(mv: ModelVersion, data: Float32Array, rows: number): Record<string, ort.Tensor> {
  const spec = mv.config.inputs[0];
  return { [spec.name]: new ort.Tensor('float32', data, [rows, spec.shape[1]]) };
}

function openSession(mv: ModelVersion, provider: ProviderName, intraOpThreads = availableParallelism()): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(mv.path, sessionOptions(provider, { intraOpThreads, webgpu: DEFAULT_CONFIG.workers.webgpu }));
}

// ---------------------------------------------------------------------------------------------
// 1. The adapter

interface ProbeTry {
  vkDriverFiles?: string;
  ok: boolean;
  ms: number;
  error?: string;
  /** What Dawn and the Vulkan loader wrote to stderr. */
  stderr: string;
}

function probeOnce(env: NodeJS.ProcessEnv): Promise<ProbeTry> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(ROOT, 'bench', 'gpu-check', 'probe.ts'), join(MODELS_DIR, 'spam-mlp', '1', 'model.onnx')], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      let r: { ok: boolean; ms: number; error?: string };
      try {
        r = JSON.parse(line) as typeof r;
      } catch {
        r = { ok: false, ms: NaN, error: `the probe process ended (${code ?? signal}) without an answer` };
      }
      resolve({ vkDriverFiles: env.VK_DRIVER_FILES, ...r, stderr: err.trim().slice(-4000) });
    });
  });
}

/** NVIDIA's driver libraries, which its ICD file names without a path, where containers mount them. */
function withNvidiaLibraries(env: NodeJS.ProcessEnv): string {
  const dirs = ['/usr/local/nvidia/lib64', '/usr/local/nvidia/lib'].filter((d) => existsSync(d));
  return [...(env.LD_LIBRARY_PATH ?? '').split(delimiter).filter(Boolean), ...dirs].join(delimiter);
}

async function probe(): Promise<{ ok: boolean; tries: ProbeTry[]; vulkan: VulkanSetup; diagnosis?: string }> {
  const vulkan = vulkanSetup();
  const tries = [await probeOnce(process.env)];
  if (!tries[0].ok) {
    // The loader reads one set of driver files; try each candidate alone, NVIDIA's first.
    const candidates = [...new Set([...vulkan.unreadNvidiaIcds, ...EXTRA_ICD_CANDIDATES.filter((c) => existsSync(c)), ...vulkan.icds])];
    for (const icd of candidates) {
      if (left() < 60) break;
      const env = { ...process.env, VK_DRIVER_FILES: icd, VK_ICD_FILENAMES: icd, LD_LIBRARY_PATH: withNvidiaLibraries(process.env) };
      const t = await probeOnce(env);
      tries.push(t);
      if (t.ok) {
        // Everything started from here on (the worker of the serve step too) sees the same driver.
        Object.assign(process.env, { VK_DRIVER_FILES: icd, VK_ICD_FILENAMES: icd, LD_LIBRARY_PATH: env.LD_LIBRARY_PATH });
        break;
      }
    }
  }
  const ok = tries.some((t) => t.ok);
  return { ok, tries, vulkan, diagnosis: ok ? undefined : explainNoAdapter(vulkanSetup()) };
}

/** The GPU as nvidia-smi names it (name, driver, memory); undefined without one. */
function gpuName(): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', () => resolve(undefined));
    child.on('close', (code) => resolve(code === 0 ? out.trim().split('\n')[0] : undefined));
  });
}

// ---------------------------------------------------------------------------------------------
// 2. Throughput by batch size

interface Cell {
  provider: ProviderName;
  batch: number;
  rowsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  runs: number;
  /** The first run at this batch size: on WebGPU it builds the compute pipelines. */
  firstRunMs: number;
  /** Host CPU per row (process CPU time over the runs). */
  cpuUsPerRow: number;
}

async function measure(
  session: ort.InferenceSession,
  input: Record<string, ort.Tensor>,
  ms: number,
): Promise<{ lat: number[]; elapsed: number; cpuMs: number }> {
  const lat: number[] = [];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  while (performance.now() - t0 < ms || lat.length < 3) {
    const t = performance.now();
    await session.run(input);
    lat.push(performance.now() - t);
  }
  const cpu = process.cpuUsage(cpu0);
  return { lat, elapsed: performance.now() - t0, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function bench(repo: ModelRepository): Promise<Record<string, Cell[]>> {
  const out: Record<string, Cell[]> = {};
  for (const name of MODELS) {
    const mv = repo.find(name)!;
    const sessions = new Map<ProviderName, ort.InferenceSession>();
    for (const p of PROVIDERS) sessions.set(p, await openSession(mv, p));
    const inputs = new Map(BATCHES.map((b) => [b, feeds(mv, inputRows(mv, b, b), b)]));
    const first = new Map<string, number>();
    for (const p of PROVIDERS)
      for (const b of BATCHES) {
        const t = performance.now();
        await sessions.get(p)!.run(inputs.get(b)!);
        first.set(`${p}/${b}`, performance.now() - t);
        await sessions.get(p)!.run(inputs.get(b)!);
      }
    const acc = new Map<string, { rates: number[]; lat: number[]; cpuMs: number; rows: number }>();
    for (let round = 0; round < opts.rounds; round++) {
      for (const b of BATCHES) {
        // Interleaved, the order flipped each round: neither provider always runs on a warmer or a cooler machine.
        for (const p of round % 2 ? [...PROVIDERS].reverse() : PROVIDERS) {
          const m = await measure(sessions.get(p)!, inputs.get(b)!, opts.benchMs);
          const a = acc.get(`${p}/${b}`) ?? { rates: [], lat: [], cpuMs: 0, rows: 0 };
          a.rates.push((b * m.lat.length * 1000) / m.elapsed);
          a.lat.push(...m.lat);
          a.cpuMs += m.cpuMs;
          a.rows += b * m.lat.length;
          acc.set(`${p}/${b}`, a);
        }
      }
    }
    for (const s of sessions.values()) await s.release();
    out[name] = [];
    for (const p of PROVIDERS)
      for (const b of BATCHES) {
        const a = acc.get(`${p}/${b}`)!;
        const lat = a.lat.sort((x, y) => x - y);
        out[name].push({
          provider: p,
          batch: b,
          rowsPerSec: Math.round(median(a.rates)),
          p50Ms: +pct(lat, 50).toFixed(3),
          p99Ms: +pct(lat, 99).toFixed(3),
          runs: lat.length,
          firstRunMs: +first.get(`${p}/${b}`)!.toFixed(1),
          cpuUsPerRow: +((a.cpuMs * 1000) / a.rows).toFixed(2),
        });
      }
    const cell = (p: ProviderName, b: number): Cell => out[name].find((c) => c.provider === p && c.batch === b)!;
    const head = PROVIDERS.map((p) => `${p} rows/s | ${p} p50 / p99 ms | ${p} first run ms | ${p} host CPU us/row`).join(' | ');
    say(
      `\n${name} (${mv.config.inputs[0].shape[1]} inputs), one session per provider, ${opts.rounds} round(s) of ${opts.benchMs} ms per cell:`,
    );
    say(`| batch | ${head}${CPU_ONLY ? '' : ' | webgpu / cpu rows/s'} |`);
    say(`|---|${PROVIDERS.map(() => '---|---|---|---').join('|')}${CPU_ONLY ? '' : '|---'}|`);
    for (const b of BATCHES) {
      const cols = PROVIDERS.map((p) => {
        const c = cell(p, b);
        return `${c.rowsPerSec} | ${f(c.p50Ms, 3)} / ${f(c.p99Ms, 3)} | ${f(c.firstRunMs)} | ${f(c.cpuUsPerRow, 2)}`;
      }).join(' | ');
      const ratio = CPU_ONLY ? '' : ` | ${f(cell('webgpu', b).rowsPerSec / cell('cpu', b).rowsPerSec, 2)}x`;
      say(`| ${b} | ${cols}${ratio} |`);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// 3. Outputs against CPU

async function correctness(
  repo: ModelRepository,
): Promise<{ model: string; rows: number; tolerance: Tolerance; comparison: Comparison }[]> {
  const results: { model: string; rows: number; tolerance: Tolerance; comparison: Comparison }[] = [];
  for (const name of MODELS) {
    const mv = repo.find(name)!;
    const tolerance = TOLERANCES[name] ?? DEFAULT_TOLERANCE;
    const ref = await openSession(mv, 'cpu');
    // --cpu-only: one intra-op thread against all cores, a check of the comparison itself.
    const got = CPU_ONLY ? await openSession(mv, 'cpu', 1) : await openSession(mv, CANDIDATE);
    const output = mv.config.scoresOutput ?? mv.config.outputs[0].name;
    const width = mv.config.outputs.find((o) => o.name === output)!.shape.at(-1)!;
    for (const rows of CORRECTNESS_ROWS) {
      const input = feeds(mv, inputRows(mv, rows, 1000 + rows), rows);
      const a = (await ref.run(input))[output].data as Float32Array;
      const b = (await got.run(input))[output].data as Float32Array;
      const comparison = compareOutputs(a, b, width, tolerance);
      results.push({ model: name, rows, tolerance, comparison });
      say(
        `${name}, ${rows} row(s), ${CPU_ONLY ? 'cpu (1 intra-op thread) against cpu (all cores)' : `${CANDIDATE} against cpu`}: max |diff| ${comparison.maxAbsDiff.toExponential(2)}, ` +
          `${f(comparison.worstRatio * 100, 2)}% of the tolerance (atol ${tolerance.atol}, rtol ${tolerance.rtol}), ${comparison.labelFlips} label flip(s), ` +
          `${comparison.ties} tie(s) within it: ${comparison.pass ? 'PASS' : 'FAIL'}`,
      );
      if (!comparison.pass) report.failures.push(`correctness: ${name} at ${rows} row(s) outside the tolerance`);
    }
    await ref.release();
    await got.release();
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// 4. Serving the gpu pool

/** The sum of a metric's samples whose labels include model="mlp-bench" in Prometheus text. */
function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))) if (/model="mlp-bench/.test(m[1])) sum += Number(m[2]);
  return sum;
}

async function scrape(url: string): Promise<string> {
  try {
    return await (await fetch(url)).text();
  } catch {
    return '';
  }
}

interface Phase {
  name: 'batched' | 'unbatched';
  batching: BatchingSpec;
  seconds: number;
}

async function servePhase(redisUrl: string, dir: string, phase: Phase, rate: number): Promise<Record<string, unknown>> {
  const [port, workerPort] = [await freePort(), await freePort()];
  const overrides = join(dir, `overrides-${phase.name}.yaml`);
  writeFileSync(overrides, stringify({ 'mlp-bench': { batching: phase.batching } }));
  const env = {
    BATCHLINE_REDIS_URL: redisUrl,
    BATCHLINE_REDIS_PREFIX: `gpu-check-${phase.name}`,
    BATCHLINE_MODELS: MODELS_DIR,
    BATCHLINE_MODEL_OVERRIDES: overrides,
    BATCHLINE_PORT: String(port),
    BATCHLINE_HOST: '127.0.0.1',
    BATCHLINE_EXECUTION_PROVIDER: CANDIDATE,
    BATCHLINE_GRAPHIQL: 'false',
    BATCHLINE_MAINTENANCE: 'false',
    BATCHLINE_LOG_REQUESTS: 'errors',
    // A request older than this has failed anyway; it also bounds how long an overloaded phase takes to drain.
    BATCHLINE_PREDICT_TIMEOUT_MS: String(PREDICT_TIMEOUT_MS),
    NODE_ENV: 'production',
  };
  const procs: Proc[] = [];
  try {
    const started = /"msg":"worker started"/;
    const worker = await startCli(
      `worker-gpu-${phase.name}`,
      ['worker', '--pool', 'gpu'],
      { ...env, BATCHLINE_WORKER_HTTP_PORT: String(workerPort) },
      dir,
      started,
    );
    procs.push(worker);
    procs.push(await startCli(`api-${phase.name}`, ['serve'], env, dir, /"msg":"API listening"/));
    const choice = readFileSync(worker.logFile, 'utf8')
      .split('\n')
      .find((l) => l.includes('"msg":"gpu pool runs on'));
    const runsOn = choice ? (JSON.parse(choice) as { executionProvider: string; msg: string }) : undefined;
    const clients = Math.max(1, Math.min(4, Math.floor(availableParallelism() / 4)));
    const spec = (ms: number, r: number): LoadSpec => ({
      url: `http://127.0.0.1:${port}/graphql`,
      ws: `ws://127.0.0.1:${port}/graphql`,
      model: 'mlp-bench',
      rowWidth: 512,
      rowsPerRequest: 1,
      encoding: 'base64',
      transport: 'http',
      loop: 'open',
      concurrency: 1,
      rate: r / clients,
      durationMs: ms,
      // Bounds the backlog an overloaded phase leaves to drain once arrivals stop: requests past it count as dropped.
      maxInFlight: Math.ceil((CPU_ONLY ? 32 : 2048) / clients),
    });
    // Not counted: connections, the API's JIT, the first batches.
    await runLoadClients(Array.from({ length: clients }, () => spec(CPU_ONLY ? 500 : 2000, Math.min(rate, 200))));
    const metricsUrl = `http://127.0.0.1:${workerPort}/metrics`;
    const before = await scrape(metricsUrl);
    const cpu0 = procs.map((p) => cpuMsOf(p.pid));
    const results: LoadResult[] = await runLoadClients(Array.from({ length: clients }, () => spec(phase.seconds * 1000, rate)));
    const after = await scrape(metricsUrl);
    const cpu1 = procs.map((p) => cpuMsOf(p.pid));
    const lat = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
    const seconds = Math.max(...results.map((r) => r.elapsedMs)) / 1000;
    const codes: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.codes)) codes[k] = (codes[k] ?? 0) + v;
    const answered = lat.length + results.reduce((n, r) => n + r.errors, 0);
    const batches = metricSum(after, 'batchline_batch_rows_count') - metricSum(before, 'batchline_batch_rows_count');
    const batchRows = metricSum(after, 'batchline_batch_rows_sum') - metricSum(before, 'batchline_batch_rows_sum');
    const out = {
      batching: phase.batching,
      runsOn: runsOn?.executionProvider,
      providerLine: runsOn?.msg,
      offeredPerSec: rate,
      seconds: +seconds.toFixed(1),
      completedPerSec: +(lat.length / seconds).toFixed(1),
      p50Ms: +f(pct(lat, 50), 2),
      p99Ms: +f(pct(lat, 99), 2),
      errors: results.reduce((s, r) => s + r.errors, 0),
      dropped: results.reduce((s, r) => s + r.dropped, 0),
      codes,
      meanBatchRows: +(batchRows / batches).toFixed(2),
      // Over every request answered, failed ones included.
      cpuMsPerRequest: {
        worker: +((cpu1[0] - cpu0[0]) / Math.max(1, answered)).toFixed(3),
        api: +((cpu1[1] - cpu0[1]) / Math.max(1, answered)).toFixed(3),
      },
    };
    const how =
      phase.batching.maxBatchSize === 1 ? 'one row a run' : `${label(phase.batching)}, at most ${phase.batching.maxBatchSize} rows`;
    say(
      `${phase.name} (${how}), on ${out.runsOn}: ` +
        `offered ${rate}/s for ${out.seconds} s, completed ${out.completedPerSec}/s, p50 ${out.p50Ms} ms, p99 ${out.p99Ms} ms, ` +
        `mean batch ${out.meanBatchRows} rows, ${out.errors} error(s)${Object.keys(codes).length ? ` ${JSON.stringify(codes)}` : ''}, ${out.dropped} dropped; ` +
        `CPU per request: worker ${out.cpuMsPerRequest.worker} ms, API ${out.cpuMsPerRequest.api} ms`,
    );
    if (out.runsOn !== CANDIDATE) report.failures.push(`serve: the gpu pool ran on ${out.runsOn}, not ${CANDIDATE}`);
    if (phase.name === 'batched' && lat.length === 0) report.failures.push('serve: the batched phase answered no request');
    else if (phase.name === 'batched' && out.errors > 0.01 * answered)
      say(`warning: ${out.errors} of ${answered} requests failed with batching: the pool did not keep up with ${rate}/s`);
    return out;
  } finally {
    for (const p of procs.reverse()) await p.stop();
  }
}

async function serve(rate: number): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'batchline-gpu-check-'));
  const redis = await startRedis(dir);
  try {
    const batched = await servePhase(redis.url, dir, { name: 'batched', batching: BATCHED, seconds: opts.serveSeconds }, rate);
    const unbatched =
      left() > opts.unbatchedSeconds + PHASE_OVERHEAD_S
        ? await servePhase(
            redis.url,
            dir,
            { name: 'unbatched', batching: { policy: 'fixed', maxBatchSize: 1, maxDelayMs: 0, sloMs: 50 }, seconds: opts.unbatchedSeconds },
            rate,
          )
        : undefined;
    const ratio = unbatched ? (batched.completedPerSec as number) / (unbatched.completedPerSec as number) : NaN;
    if (unbatched) say(`batched / unbatched throughput on ${CANDIDATE}, same offered load: ${f(ratio, 2)}x`);
    else {
      say('unbatched phase skipped: the time budget is spent');
      report.failures.push('serve: the unbatched phase skipped for time');
    }
    return { logs: dir, batched, unbatched, ratio: +f(ratio, 3) };
  } finally {
    await redis.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// 5. A profile for the simulator

async function profile(gpu: string | undefined): Promise<Record<string, unknown>> {
  // On the GPU every power of two up to the largest batch; CPU-only, the bench's sizes up to 128, to stay short.
  const powers = Array.from({ length: Math.floor(Math.log2(Math.max(...BATCHES))) + 1 }, (_, i) => 2 ** i);
  const sizes = CPU_ONLY ? BATCHES.filter((b) => b <= 128) : powers;
  const measured = await measureProfile(CANDIDATE, {
    sizes,
    rounds: opts.profileRounds,
    roundMs: CPU_ONLY ? 80 : 300,
    by: 'scripts/gpu-check.sh',
    gpu,
    log: (msg) => say(`profile ${msg}`),
  });
  const name = CPU_ONLY ? `mlp-bench-${CANDIDATE}-check.json` : `mlp-bench-${CANDIDATE}.json`;
  const files = [join(opts.outDir, name)];
  writeFileSync(files[0], JSON.stringify(measured, null, 2) + '\n');
  // On a GPU the measured profile goes where the simulator's profiles live, beside the chosen gpu-like one.
  // Only where nvidia-smi named the GPU: a software adapter's figures must not pass for a GPU's.
  if (!CPU_ONLY && gpu && existsSync(PROFILES_DIR)) {
    copyFileSync(files[0], join(PROFILES_DIR, name));
    files.push(join(PROFILES_DIR, name));
  }
  // Read back the way the simulator reads profiles: a format it refuses fails here.
  const loaded = loadProfile(files[0]);
  const gpuLike = loadProfile(join(PROFILES_DIR, 'gpu-like.json'));
  // What the capacity planner makes of each: replicas for 1000 requests/s within a p99 of 50 ms.
  const plan = async (p: Profile): Promise<{ perReplicaPerSec: number; replicas: number } | { none: string }> => {
    try {
      const c = await planCapacity({ profile: p, ratePerSec: 1000, sloMs: 50, policy: 'predictive' });
      return { perReplicaPerSec: Math.round(c.perReplicaPerSec), replicas: c.replicas };
    } catch (e) {
      return { none: (e as Error).message };
    }
  };
  const said = (x: Awaited<ReturnType<typeof plan>>): string =>
    'none' in x ? `no rate within 50 ms (${x.none})` : `${x.perReplicaPerSec}/s a replica, ${x.replicas} replica(s)`;
  const [mine, chosen] = [await plan(loaded), await plan(gpuLike)];
  say(`profile ${files.join(' and ')}: ${new ServiceModel(loaded).describe()}`);
  say(
    `simulator, 1000 requests/s within p99 50 ms (predictive): measured ${CANDIDATE} profile ${said(mine)}; ` +
      `gpu-like (chosen: ${gpuLike.cost!.a} ms + ${gpuLike.cost!.b} ms/row) ${said(chosen)}`,
  );
  return {
    files,
    profile: measured,
    fit: new ServiceModel(loaded).fit,
    gpuLikeFit: gpuLike.cost,
    planner: { measured: mine, gpuLike: chosen },
  };
}

// ---------------------------------------------------------------------------------------------

async function step<T>(name: string, needSeconds: number, run: () => Promise<T>): Promise<T | undefined> {
  if (left() < needSeconds) {
    say(`\n## ${name}: skipped, ${f(left(), 0)} s of the ${opts.budgetSeconds} s budget left (needs about ${needSeconds} s)`);
    report.failures.push(`${name}: skipped for time`);
    return undefined;
  }
  say(`\n## ${name}`);
  const t0 = performance.now();
  try {
    const r = await run();
    (report.seconds as Record<string, number>)[name] = +((performance.now() - t0) / 1000).toFixed(1);
    return r;
  } catch (e) {
    say(`${name} failed: ${(e as Error).stack ?? e}`);
    report.failures.push(`${name}: ${(e as Error).message}`);
    return undefined;
  }
}

async function main(): Promise<number> {
  mkdirSync(opts.outDir, { recursive: true });
  report.seconds = {};
  const gpu = CPU_ONLY ? undefined : await gpuName();
  report.machine = {
    cpu: cpus()[0]?.model,
    cores: availableParallelism(),
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
    kernel: release(),
    node: process.version,
    onnxruntime: ort.env.versions,
    gpu: gpu ?? null,
    vulkanEnv: {
      VK_DRIVER_FILES: process.env.VK_DRIVER_FILES,
      VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES,
      LD_LIBRARY_PATH: process.env.LD_LIBRARY_PATH,
    },
  };
  say(`batchline GPU check, ${CPU_ONLY ? 'CPU-only mode (CPU in WebGPU’s place: this says nothing about a GPU)' : 'WebGPU against CPU'}`);
  say(
    `machine: ${String((report.machine as Record<string, unknown>).cpu)}, ${availableParallelism()} cores; GPU: ${gpu ?? (CPU_ONLY ? 'not used' : 'nvidia-smi found none')}; node ${process.version}, onnxruntime-node ${ort.env.versions.node}`,
  );
  // What scripts/gpu-check.sh did before (unpacking, the Vulkan driver it chose), for the report.
  for (const line of (process.env.GPU_CHECK_SETUP ?? '').split('\n').filter(Boolean)) say(`setup: ${line}`);

  let adapter = true;
  if (!CPU_ONLY) {
    const p = await step('probe', 30, probe);
    report.probe = p;
    adapter = p?.ok === true;
    for (const t of p?.tries ?? [])
      say(
        `WebGPU with VK_DRIVER_FILES=${t.vkDriverFiles ?? '(unset)'}: ${t.ok ? `adapter found, first run in ${t.ms} ms` : `no (${t.error?.split('\n')[0].slice(-200)})`}${t.stderr ? `\n  stderr: ${t.stderr.split('\n').slice(0, 6).join('\n  ')}` : ''}`,
      );
    if (p && !p.ok) {
      say(`no WebGPU adapter: ${p.diagnosis}`);
      report.failures.push(`probe: no WebGPU adapter (${p.diagnosis})`);
    }
  }
  const repo = await ModelRepository.scan(MODELS_DIR);
  if (adapter) {
    const b = await step('bench', 60, () => bench(repo));
    report.bench = b;
    report.correctness = await step('correctness', 20, () => correctness(repo));
    const one = b?.['mlp-bench']?.find((c) => c.provider === CANDIDATE && c.batch === 1)?.rowsPerSec ?? 500;
    // Twice what the runtime does one row at a time: more than the unbatched pool can keep up with.
    const rate = opts.rate ?? Math.round(Math.min(CPU_ONLY ? 60 : 4000, Math.max(CPU_ONLY ? 20 : 200, 2 * one)));
    report.profile = await step('profile', 45, () => profile(gpu));
    report.serve = await step('serve', opts.serveSeconds + PHASE_OVERHEAD_S, () => serve(rate));
  } else {
    say('\nno adapter: bench, correctness, serve and profile on WebGPU not run (rerun with --cpu-only for the CPU half)');
  }
  report.finishedAt = new Date().toISOString();
  report.totalSeconds = +((Date.now() - started) / 1000).toFixed(1);
  report.pass = report.failures.length === 0;
  say(`\n${report.pass ? 'PASS' : `FAIL: ${report.failures.join('; ')}`} (${report.totalSeconds} s)`);
  const file = join(opts.outDir, `gpu-check-${CPU_ONLY ? 'cpu-only' : 'gpu'}-${report.startedAt as string}.json`.replace(/:/g, '-'));
  say(`report: ${file}`);
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  return report.pass ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e: Error) => {
    process.stderr.write(`gpu-check: ${e.stack ?? e.message}\n`);
    process.exit(2);
  },
);
