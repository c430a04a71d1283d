/**
 * `npm run bench:fleet`: many models on a memory budget (issue 20, docs/RESIDENCY.md) against
 * the same models all loaded, in one run on this machine.
 *
 * Generates FLEET_MODELS ONNX models (default 60) of mixed sizes (log-uniform from
 * FLEET_MIN_MB to FLEET_MAX_MB of weights, default 0.25 to 8) at run time, and starts two
 * stacks on one private redis-server, each an API and one cpu worker (processes of their own;
 * the worker with FLEET_THREADS inference threads, default 2): **budget**, whose worker may
 * hold about a fifth of the models (`workers.modelMemoryBytes` = 2 x a fifth of the files: a
 * version measures about twice its file once loaded), **budget, no deferral** (the same with
 * `workers.deferColdJobs` off), and **all loaded**, without a budget. Open-loop traffic (Poisson
 * arrivals at FLEET_RATE a second for FLEET_SECONDS) with Zipf popularity (exponent FLEET_ZIPF,
 * default 1.1, ranks shuffled so size and popularity are unrelated) sends each request to every
 * stacks at once, rotating which goes first: the baseline is measured in the same run,
 * request for request. Every answer is checked against onnxruntime run in this process on the
 * same input.
 *
 * Prints, per stack: p50/p99 latency (all, and the hottest tenth of the models), answers that
 * waited for a load and their cold-start p50/p99 against the bare in-process load-and-first-run
 * time of the same models, loads and evictions per minute, the worker's peak RSS against its
 * start and the budget, its CPU per request, and wrong answers. Writes
 * bench/snapshots/<date>-fleet.json.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import * as ort from 'onnxruntime-node';
import { stringify } from 'yaml';
import { encodeDenseModel } from '../scripts/models/onnx-writer.ts';
import { mulberry32 } from '../scripts/models/prng.ts';
import type { WorkerEntry } from '../core/control/worker-registry.ts';
import { benchDir, cpuMsOf, freePort, ROOT, startCli, startRedis, type Proc } from './processes.ts';

const MODELS = Number(process.env.FLEET_MODELS ?? 60);
const SECONDS = Number(process.env.FLEET_SECONDS ?? 60);
const RATE = Number(process.env.FLEET_RATE ?? 20);
const ZIPF = Number(process.env.FLEET_ZIPF ?? 1.1);
const MIN_MB = Number(process.env.FLEET_MIN_MB ?? 0.25);
const MAX_MB = Number(process.env.FLEET_MAX_MB ?? 8);
const THREADS = Number(process.env.FLEET_THREADS ?? 2);
const IN = 64;
const OUT = 8;

const log = (msg: string): void => void process.stderr.write(`[bench:fleet ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const MiB = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

interface Model {
  name: string;
  path: string;
  bytes: number;
  rank: number;
  session?: ort.InferenceSession;
  bareMs?: number;
}

/** 64 -> hidden -> 8: the hidden width sets the size; runs stay cheap (72 x hidden multiply-adds a row). */
function generate(dir: string, random: () => number): Model[] {
  const models: Model[] = [];
  const ranks = Array.from({ length: MODELS }, (_, i) => i);
  for (let i = ranks.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [ranks[i], ranks[j]] = [ranks[j], ranks[i]];
  }
  for (let i = 0; i < MODELS; i++) {
    const mb = MIN_MB * (MAX_MB / MIN_MB) ** random();
    const hidden = Math.max(8, Math.round((mb * 2 ** 20) / 4 / (IN + OUT)));
    const w = (n: number, s: number): Float32Array => Float32Array.from({ length: n }, (_, k) => Math.sin(k * 0.37 + s) / Math.sqrt(n / 8));
    const onnx = encodeDenseModel({
      graphName: `fleet${i}`,
      inputName: 'x',
      outputName: 'y',
      softmax: false,
      layers: [
        { inFeatures: IN, outFeatures: hidden, weight: w(IN * hidden, i), bias: new Float32Array(hidden), activation: 'relu' },
        { inFeatures: hidden, outFeatures: OUT, weight: w(hidden * OUT, i + 0.5), bias: new Float32Array(OUT), activation: 'none' },
      ],
    });
    const name = `fleet-${String(i).padStart(3, '0')}`;
    const folder = join(dir, name, '1');
    mkdirSync(folder, { recursive: true });
    const path = join(folder, 'model.onnx');
    writeFileSync(path, onnx);
    writeFileSync(
      join(dir, name, 'config.yaml'),
      stringify({
        pool: 'cpu',
        task: 'raw',
        inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, IN] }],
        outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, OUT] }],
        cache: { enabled: false },
        retry: { attempts: 2, backoffMs: 0 },
      }),
    );
    models.push({ name, path, bytes: onnx.byteLength, rank: ranks[i] });
  }
  return models;
}

interface Outcome {
  ms: number;
  coldStartMs: number;
  wrong: boolean;
  error?: string;
}

interface Stack {
  label: string;
  prefix: string;
  url: string;
  api: Proc;
  worker: Proc;
  outcomes: Map<string, Outcome[]>;
  cpuStart: number;
  rssStart: number;
}

function statusKb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

const PREDICT =
  'query($m: String!, $b: String!) { predict(model: $m, input: { tensors: [{ name: "x", shape: [1, 64], datatype: "FP32", base64: $b }] }) { outputs { data } timings { coldStartMs } } }';

async function ask(stack: Stack, model: Model, x: Float32Array, want: Float32Array): Promise<void> {
  const t0 = performance.now();
  let outcome: Outcome;
  try {
    const res = await fetch(stack.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: PREDICT, variables: { m: model.name, b: Buffer.from(x.buffer).toString('base64') } }),
    });
    const body = (await res.json()) as {
      data?: { predict: { outputs: { data: number[] }[]; timings: { coldStartMs: number } } };
      errors?: { message: string; extensions?: { code?: string } }[];
    };
    const ms = performance.now() - t0;
    if (body.errors?.length)
      outcome = { ms, coldStartMs: 0, wrong: true, error: body.errors[0].extensions?.code ?? body.errors[0].message };
    else {
      const got = body.data!.predict.outputs[0].data;
      const wrong = got.length !== OUT || got.some((v, j) => Math.abs(v - want[j]) > 1e-4 * Math.max(1, Math.abs(want[j])));
      outcome = { ms, coldStartMs: body.data!.predict.timings.coldStartMs, wrong };
    }
  } catch (e) {
    outcome = { ms: performance.now() - t0, coldStartMs: 0, wrong: true, error: (e as Error).message };
  }
  const list = stack.outcomes.get(model.name) ?? [];
  list.push(outcome);
  stack.outcomes.set(model.name, list);
}

async function registry(redisUrl: string, prefix: string): Promise<WorkerEntry[]> {
  const r = new Redis(redisUrl);
  try {
    return Object.values(await r.hgetall(`${prefix}:workers`)).map((j) => JSON.parse(j) as WorkerEntry);
  } finally {
    r.disconnect();
  }
}

/** Every process main started: stopped however it ends, so a failed start leaves none running. */
const running: { stop(): Promise<void> }[] = [];

async function main(): Promise<void> {
  const dir = benchDir();
  const repo = join(dir, 'models');
  // Seeded, so two runs send the same traffic.
  const random = mulberry32(20);
  const models = generate(repo, random);
  const totalBytes = models.reduce((a, m) => a + m.bytes, 0);
  // About a fifth of the models: a version measures about twice its file once loaded; never less than the largest can take.
  const budget = Math.round(Math.max((2 * totalBytes) / 5, 4 * Math.max(...models.map((m) => m.bytes))));
  log(
    `${MODELS} models, ${MiB(totalBytes)} of files (${MiB(Math.min(...models.map((m) => m.bytes)))} to ${MiB(Math.max(...models.map((m) => m.bytes)))}); budget ${MiB(budget)}`,
  );

  // The reference sessions, for checking every answer.
  for (const m of models) m.session = await ort.InferenceSession.create(m.path);
  /** Bare load: a fresh session and its first run in this process, without the serving around it. Measured during the traffic, so under the same machine load. */
  const bare = new Map<string, number[]>();
  const bareLoad = async (m: Model): Promise<void> => {
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(m.path);
    await session.run({ x: new ort.Tensor('float32', new Float32Array(IN), [1, IN]) });
    const ms = performance.now() - t0;
    await session.release();
    bare.set(m.name, [...(bare.get(m.name) ?? []), ms]);
  };

  const redis = await startRedis(dir);
  running.push(redis);
  const stacks: Stack[] = [];
  for (const [label, env] of [
    ['budget', { BATCHLINE_WORKER_MODEL_MEMORY: String(budget) }],
    ['budget, no deferral', { BATCHLINE_WORKER_MODEL_MEMORY: String(budget), BATCHLINE_WORKER_DEFER_COLD_JOBS: 'false' }],
    ['all loaded', {}],
  ] as const) {
    const prefix = `fleet-${stacks.length}`;
    const common = { BATCHLINE_REDIS_URL: redis.url, BATCHLINE_REDIS_PREFIX: prefix, BATCHLINE_MODELS: repo, BATCHLINE_LOG_LEVEL: 'info' };
    const worker = await startCli(
      `worker-${prefix}`,
      ['worker', '--pool', 'cpu'],
      { ...common, ...env, BATCHLINE_WORKER_THREADS: String(THREADS), BATCHLINE_INTRA_OP_THREADS: '1', NODE_ENV: 'production' },
      dir,
      /"msg":"worker started"/,
    );
    running.push(worker);
    const port = await freePort();
    const api = await startCli(
      `api-${prefix}`,
      ['serve'],
      { ...common, BATCHLINE_PORT: String(port), BATCHLINE_HOST: '127.0.0.1', BATCHLINE_LOG_REQUESTS: 'off', NODE_ENV: 'production' },
      dir,
      /"msg":"API listening"/,
    );
    running.push(api);
    const url = `http://127.0.0.1:${port}/graphql`;
    stacks.push({
      label,
      prefix,
      url,
      api,
      worker,
      outcomes: new Map(),
      cpuStart: cpuMsOf(worker.pid),
      rssStart: statusKb(worker.pid, 'VmRSS'),
    });
  }

  // Zipf weights by rank.
  const weights = models.map((m) => 1 / (m.rank + 1) ** ZIPF);
  const total = weights.reduce((a, b) => a + b, 0);
  const cumulative: number[] = [];
  weights.reduce((acc, w, i) => (cumulative[i] = acc + w / total), 0);
  const pick = (): Model =>
    models[
      Math.min(
        models.length - 1,
        cumulative.findIndex((c) => c >= random()),
      )
    ];

  log(`${RATE} requests/s for ${SECONDS} s to every stack`);
  const started = performance.now();
  const inFlight: Promise<unknown>[] = [];
  let bareChain = Promise.resolve();
  let bareAt = 0;
  let next = 0;
  let n = 0;
  while (next < SECONDS * 1000) {
    const wait = started + next - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const m = pick();
    const x = Float32Array.from({ length: IN }, () => random() * 2 - 1);
    const want = (await m.session!.run({ x: new ort.Tensor('float32', x, [1, IN]) })).y.data as Float32Array;
    // Each arrival to every stack, the first one rotating.
    const first = n++ % stacks.length;
    const order = [...stacks.slice(first), ...stacks.slice(0, first)];
    for (const s of order) inFlight.push(ask(s, m, x, want));
    // Bare loads, one at a time, of every model in turn, through the run.
    if (performance.now() - started > bareAt) {
      const target = models[Math.floor(bareAt / 250) % models.length];
      bareAt += 250;
      bareChain = bareChain.then(() => bareLoad(target));
    }
    next += (-Math.log(1 - random()) / RATE) * 1000;
  }
  await Promise.all(inFlight);
  await bareChain;
  for (const m of models) if (!bare.has(m.name)) await bareLoad(m);
  for (const m of models) m.bareMs = pct(bare.get(m.name)!, 50);
  const minutes = (performance.now() - started) / 60_000;

  const hot = new Set(models.filter((m) => m.rank < Math.max(1, Math.round(MODELS / 10))).map((m) => m.name));
  const report: Record<string, unknown> = {
    command: 'npm run bench:fleet',
    env: {
      FLEET_MODELS: MODELS,
      FLEET_SECONDS: SECONDS,
      FLEET_RATE: RATE,
      FLEET_ZIPF: ZIPF,
      FLEET_MIN_MB: MIN_MB,
      FLEET_MAX_MB: MAX_MB,
      FLEET_THREADS: THREADS,
    },
    loadAverage: readFileSync('/proc/loadavg', 'utf8').trim(),
    models: MODELS,
    fileBytes: totalBytes,
    budgetBytes: budget,
    bareLoadMs: {
      p50: pct([...bare.values()].flat(), 50),
      p99: pct([...bare.values()].flat(), 99),
      samples: [...bare.values()].flat().length,
    },
    stacks: {},
  };
  const lines: string[] = [];
  for (const s of stacks) {
    const all = [...s.outcomes.values()].flat();
    const hotMs = [...s.outcomes].filter(([k]) => hot.has(k)).flatMap(([, o]) => o.map((x) => x.ms));
    const coldNames = [...s.outcomes].flatMap(([k, o]) => (o.some((x) => x.coldStartMs > 0) ? [k] : []));
    const cold = all.filter((o) => o.coldStartMs > 0).map((o) => o.coldStartMs);
    // Bare loads of the models that had cold starts, weighted as the cold starts were.
    const bareOfCold = models.flatMap((m) =>
      coldNames.includes(m.name)
        ? s.outcomes
            .get(m.name)!
            .filter((o) => o.coldStartMs > 0)
            .map(() => m.bareMs!)
        : [],
    );
    const entry = (await registry(redis.url, s.prefix))[0];
    const cpuMs = cpuMsOf(s.worker.pid) - s.cpuStart;
    const figures = {
      requests: all.length,
      wrong: all.filter((o) => o.wrong).length,
      errors: [...new Set(all.flatMap((o) => (o.error ? [o.error] : [])))],
      p50Ms: pct(
        all.map((o) => o.ms),
        50,
      ),
      p99Ms: pct(
        all.map((o) => o.ms),
        99,
      ),
      hotP50Ms: pct(hotMs, 50),
      hotP99Ms: pct(hotMs, 99),
      hitRate: 1 - cold.length / all.length,
      coldStarts: cold.length,
      coldStartP50Ms: pct(cold, 50),
      coldStartP99Ms: pct(cold, 99),
      bareLoadOfColdP50Ms: pct(bareOfCold, 50),
      bareLoadOfColdP99Ms: pct(bareOfCold, 99),
      loadsPerMinute: (entry?.residency?.loads ?? 0) / minutes,
      evictionsPerMinute: (entry?.residency?.evictions ?? 0) / minutes,
      peakResidentBytes: entry?.residency?.peakBytes,
      workerRssStart: s.rssStart,
      workerRssPeak: statusKb(s.worker.pid, 'VmHWM'),
      workerCpuMsPerRequest: cpuMs / all.length,
    };
    (report.stacks as Record<string, unknown>)[s.label] = figures;
    lines.push(
      `${s.label.padEnd(20)} requests ${figures.requests}, wrong ${figures.wrong}${figures.errors.length ? ` (${figures.errors.join(', ')})` : ''}; ` +
        `p50 ${figures.p50Ms.toFixed(1)} ms, p99 ${figures.p99Ms.toFixed(1)} ms; hot tenth p50 ${figures.hotP50Ms.toFixed(1)} ms, p99 ${figures.hotP99Ms.toFixed(1)} ms; ` +
        `hit rate ${(figures.hitRate * 100).toFixed(1)}%, cold starts ${figures.coldStarts} (p50 ${figures.coldStartP50Ms.toFixed(1)} ms, p99 ${figures.coldStartP99Ms.toFixed(1)} ms; bare load of the same models p50 ${figures.bareLoadOfColdP50Ms.toFixed(1)} ms, p99 ${figures.bareLoadOfColdP99Ms.toFixed(1)} ms); ` +
        `loads ${figures.loadsPerMinute.toFixed(1)}/min, evictions ${figures.evictionsPerMinute.toFixed(1)}/min; ` +
        `worker RSS ${MiB(figures.workerRssStart)} at start, peak ${MiB(figures.workerRssPeak)}${figures.peakResidentBytes !== undefined ? `, resident models peak ${MiB(figures.peakResidentBytes)}` : ''}; ` +
        `worker CPU ${figures.workerCpuMsPerRequest.toFixed(2)} ms/request`,
    );
  }
  type F = { hotP50Ms: number; hotP99Ms: number; p99Ms: number; workerRssPeak: number; workerCpuMsPerRequest: number };
  const figs = stacks.map((s) => (report.stacks as Record<string, F>)[s.label]);
  const a = figs[figs.length - 1];
  for (const [i, b] of figs.slice(0, -1).entries())
    lines.push(
      `ratios (${stacks[i].label} / all loaded): hot p50 ${(b.hotP50Ms / a.hotP50Ms).toFixed(2)}, hot p99 ${(b.hotP99Ms / a.hotP99Ms).toFixed(2)}, p99 ${(b.p99Ms / a.p99Ms).toFixed(2)}, worker peak RSS ${(b.workerRssPeak / a.workerRssPeak).toFixed(2)}, worker CPU/request ${(b.workerCpuMsPerRequest / a.workerCpuMsPerRequest).toFixed(2)}`,
    );
  console.log(lines.join('\n'));
  const snapshot = join(ROOT, 'bench', 'snapshots', `${new Date().toISOString().slice(0, 10)}-fleet.json`);
  writeFileSync(snapshot, JSON.stringify(report, null, 2) + '\n');
  log(`wrote ${snapshot}`);

  for (const s of stacks) {
    await s.api.stop();
    await s.worker.stop();
  }
  await redis.stop();
  for (const m of models) await m.session?.release();
}

try {
  await main();
} finally {
  for (const p of running.reverse()) await p.stop();
}
