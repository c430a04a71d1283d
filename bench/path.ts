/**
 * `npm run bench:path`: the serving path against its own floor and ceiling, in one run on
 * this machine (about 5 minutes at the defaults; not part of `npm test`).
 *
 * A real stack, started here the way `npm start` starts one (`cli/main.ts serve`, `worker
 * --pool cpu`, `worker --pool gpu`, each its own process, default sizing, NODE_ENV=production,
 * logs to files) on a private redis-server, serves the repository's models. Load comes from
 * separate processes: wrk (2 threads, closed loop, rotating prepared bodies) for every HTTP
 * scenario (GraphQL, and the inference protocol's REST door with binary tensor data), h2load
 * (bench/h2load.ts: 2 threads, closed loop, one prepared message) for its gRPC door, and
 * bench/load-client.ts (two processes) for WebSocket submit + subscribe, which wrk cannot speak. The ceiling is onnxruntime-node alone (bench/ceiling.ts) while the stack
 * is stopped.
 *
 * Rounds visit every scenario, every other round in reverse order, so a drift of the shared
 * machine falls on all of them alike; each figure is the median over rounds, with the range.
 * For each run: requests/s, p50/p99, errors (wrk's non-2xx and socket errors, the API's
 * non-ok outcomes, the WebSocket client's failures; and a sampled answer to every body, checked
 * before the run, so a 200 with errors cannot pass), CPU ms per request of every process (from
 * /proc), Redis commands per request (`INFO commandstats` deltas; commands that Lua scripts
 * run count too), and the worker's jobs and rows per inference (its /metrics).
 *
 * Env: BENCH_SECONDS (per run, default 10), BENCH_ROUNDS (default 3), BENCH_CEILING_SECONDS
 * (per batch size, default 2). BATCHLINE_* settings pass through to the stack.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { LoadSpec } from './load-client.ts';
import { scenarios, type CeilingScenario, type GrpcScenario, type HttpScenario, type Scenario, type WsScenario } from './path-scenarios.ts';

/** The scenarios that put load on the stack. */
type LoadScenario = HttpScenario | WsScenario | GrpcScenario;
import {
  runLoadClients,
  benchDir,
  cpuMsOf,
  freePort,
  machineCpuMs,
  redisWork,
  redisWorkBetween,
  ROOT,
  startCli,
  startRedis,
  type Proc,
  type RedisWork,
} from './processes.ts';
import { runWrk } from './wrk.ts';
import { grpcFrame, runH2load } from './h2load.ts';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PROTO_OPTIONS, PROTO_PATH } from '../server/oip/grpc.ts';
import { metricSum, scrape } from './prometheus.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const CEILING_SECONDS = Number(process.env.BENCH_CEILING_SECONDS ?? 2);
// Also read: BENCH_SCENARIOS, a comma list of scenario ids to run (default: all).
/** Let the answers still in flight when the load stops land before the next run's counters start. */
const SETTLE_MS = 500;

const log = (msg: string): void => void process.stderr.write(`[bench:path ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Stack {
  url: string;
  ws: string;
  /** The HTTP root (`http://127.0.0.1:<port>`), and the inference protocol's gRPC door (`127.0.0.1:<port>`). */
  base: string;
  grpc: string;
  metricsUrls: { api: string; workerCpu: string; workerGpu: string };
  procs: Proc[];
  /** The workers' "worker started" lines: models, execution provider, threads, slots. */
  workerShapes: Record<string, unknown>;
}

async function startStack(redisUrl: string, dir: string, n: number): Promise<Stack> {
  const [port, cpuPort, gpuPort, grpcPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const env = {
    BATCHLINE_REDIS_URL: redisUrl,
    BATCHLINE_REDIS_PREFIX: `bench-path-${n}`,
    BATCHLINE_MODELS: join(ROOT, 'models'),
    BATCHLINE_PORT: String(port),
    BATCHLINE_GRPC_PORT: String(grpcPort),
    BATCHLINE_HOST: '127.0.0.1',
    NODE_ENV: 'production',
  };
  const started = /"msg":"worker started"/;
  const procs = [
    await startCli('worker-cpu', ['worker', '--pool', 'cpu'], { ...env, BATCHLINE_WORKER_HTTP_PORT: String(cpuPort) }, dir, started),
    await startCli('worker-gpu', ['worker', '--pool', 'gpu'], { ...env, BATCHLINE_WORKER_HTTP_PORT: String(gpuPort) }, dir, started),
    await startCli('api', ['serve'], env, dir, /"msg":"API listening"/),
  ];
  const workerShapes: Record<string, unknown> = {};
  for (const p of procs.slice(0, 2)) {
    const line = readFileSync(p.logFile, 'utf8')
      .split('\n')
      .filter((l) => started.test(l))
      .pop();
    const { level: _l, time: _t, pid: _p, hostname: _h, msg: _m, ...shape } = JSON.parse(line ?? '{}') as Record<string, unknown>;
    workerShapes[p.name] = shape;
  }
  return {
    url: `http://127.0.0.1:${port}/graphql`,
    ws: `ws://127.0.0.1:${port}/graphql`,
    base: `http://127.0.0.1:${port}`,
    grpc: `127.0.0.1:${grpcPort}`,
    metricsUrls: {
      api: `http://127.0.0.1:${port}/metrics`,
      workerCpu: `http://127.0.0.1:${cpuPort}/metrics`,
      workerGpu: `http://127.0.0.1:${gpuPort}/metrics`,
    },
    procs,
    workerShapes,
  };
}

async function stopStack(stack: Stack): Promise<void> {
  for (const p of [...stack.procs].reverse()) await p.stop();
}

/** Throws unless every body, sent once, is answered 200 with data and no errors. */
async function sampleAnswers(s: HttpScenario, stack: Stack): Promise<void> {
  const url = s.path ? stack.base + s.path : stack.url;
  for (const [i, b] of s.bodies.entries()) {
    const res = await fetch(url, {
      method: 'POST',
      headers: s.headers ?? { 'content-type': 'application/json', accept: 'application/json' },
      body: typeof b === 'string' ? b : new Uint8Array(b),
    });
    if (s.checkRaw) {
      const raw = Buffer.from(await res.arrayBuffer());
      const wrong = s.checkRaw({ status: res.status, headers: res.headers, body: raw }, i);
      if (wrong) throw new Error(`${s.id}: a sampled answer is wrong (${wrong}).`);
      continue;
    }
    const text = await res.text();
    let answer: { data?: Record<string, unknown> | null; errors?: unknown[] } = {};
    try {
      answer = JSON.parse(text) as typeof answer;
    } catch {
      // judged below
    }
    const wrong = res.status !== 200 ? `HTTP ${res.status}` : answer.errors ? 'errors' : !answer.data ? 'no data' : s.check(answer.data, i);
    if (wrong) throw new Error(`${s.id}: a sampled answer is wrong (${wrong}).\nbody: ${b.slice(0, 300)}\nanswer: ${text.slice(0, 1000)}`);
  }
}

/** ModelInfer's path and serializer, from our .proto. */
const MODEL_INFER = (
  protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS)['inference.GRPCInferenceService'] as Record<
    string,
    grpc.MethodDefinition<unknown, unknown>
  >
).ModelInfer;

/** Throws unless the scenario's message, sent once through @grpc/grpc-js, is answered OK with its output. */
async function sampleGrpc(s: GrpcScenario, stack: Stack): Promise<void> {
  const client = new grpc.Client(stack.grpc, grpc.credentials.createInsecure());
  try {
    const res = await new Promise<{ raw_output_contents: Buffer[] }>((resolve, reject) =>
      client.makeUnaryRequest(
        MODEL_INFER.path,
        MODEL_INFER.requestSerialize,
        MODEL_INFER.responseDeserialize as (b: Buffer) => { raw_output_contents: Buffer[] },
        s.request,
        new grpc.Metadata(),
        { deadline: Date.now() + 10_000 },
        (err, r) => (err ? reject(new Error(`${s.id}: a sampled call failed: ${grpc.status[err.code]} ${err.details}`)) : resolve(r!)),
      ),
    );
    const bytes = res.raw_output_contents[0]?.length ?? 0;
    if (bytes !== s.outputWidth * 4) throw new Error(`${s.id}: a sampled answer has ${bytes} output bytes, expected ${s.outputWidth * 4}`);
  } finally {
    client.close();
  }
}

interface Run {
  round: number;
  requests: number;
  requestsPerSec: number;
  p50: number;
  p99: number;
  /** By source: non2xx and socket (wrk), server (the API's non-ok outcomes), client (the WebSocket client). */
  errors: Record<string, number>;
  /** Answers the API counted ok (wrk does not count the requests still in flight when it stops). */
  serverOk?: number;
  cpuMsPerRequest: Record<string, number>;
  /** Share of the machine's CPU that processes other than ours used meanwhile, and that the hypervisor stole, percent. */
  otherCpuPct: number;
  stealPct: number;
  redis: RedisWork;
  /** Worker jobs per request, and rows per inference, from the workers' metrics. */
  jobsPerRequest?: number;
  rowsPerInference?: number;
}

interface CeilingRun {
  round: number;
  rowsPerSec: Record<string, number>;
}

async function wsLoad(
  s: WsScenario,
  stack: Stack,
): Promise<{ requests: number; requestsPerSec: number; p50: number; p99: number; errors: number; cpuMs: number }> {
  const procs = 2;
  const specs: LoadSpec[] = Array.from({ length: procs }, (_, i) => ({
    url: stack.url,
    ws: stack.ws,
    model: s.model,
    rowWidth: s.rowWidth,
    rowsPerRequest: 1,
    encoding: 'json',
    transport: 'ws',
    loop: 'closed',
    concurrency: Math.floor(s.connections / procs) + (i < s.connections % procs ? 1 : 0),
    rate: 0,
    durationMs: SECONDS * 1000,
    maxInFlight: s.connections,
  }));
  const results = await runLoadClients(specs);
  const lat = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const at = (q: number): number => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] ?? NaN;
  const windowMs = Math.max(SECONDS * 1000, ...results.map((r) => r.elapsedMs));
  for (const r of results) if (r.errors > 0) log(`${s.id}: client errors ${JSON.stringify(r.codes)}`);
  return {
    requests: lat.length,
    requestsPerSec: lat.length / (windowMs / 1000),
    p50: at(0.5),
    p99: at(0.99),
    errors: results.reduce((a, r) => a + r.errors, 0),
    cpuMs: results.reduce((a, r) => a + r.cpuMs, 0),
  };
}

async function measure(s: LoadScenario, stack: Stack, redis: Redis, redisPid: number, round: number, dir: string): Promise<Run> {
  if (s.kind === 'http') await sampleAnswers(s, stack);
  if (s.kind === 'grpc') await sampleGrpc(s, stack);
  await sleep(SETTLE_MS);
  const pids = Object.fromEntries(stack.procs.map((p) => [p.name, p.pid]));
  const scrapeAll = (): Promise<string[]> =>
    Promise.all([scrape(stack.metricsUrls.api), scrape(stack.metricsUrls.workerCpu), scrape(stack.metricsUrls.workerGpu)]);
  const cpuNow = (): Record<string, number> => ({
    ...Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMsOf(pid)])),
    redis: cpuMsOf(redisPid),
  });
  const cpu0 = cpuNow();
  const [metrics0, redis0, machine0, bench0] = [await scrapeAll(), await redisWork(redis), machineCpuMs(), process.cpuUsage()];

  const load =
    s.kind === 'http'
      ? await runWrk({
          url: s.path ? stack.base + s.path : stack.url,
          bodies: s.bodies,
          headers: s.headers,
          connections: s.connections,
          seconds: SECONDS,
          dir,
          name: `${s.id}-${round}`,
        }).then((w) => ({ ...w, errors: { non2xx: w.non2xx, socket: w.socketErrors } }))
      : s.kind === 'grpc'
        ? await runH2load({
            url: `http://${stack.grpc}${MODEL_INFER.path}`,
            frame: grpcFrame(MODEL_INFER.requestSerialize(s.request)),
            connections: s.connections,
            seconds: SECONDS,
            dir,
            name: `${s.id}-${round}`,
          }).then((h) => ({ ...h, errors: { non2xx: h.non2xx, socket: h.socketErrors } }))
        : await wsLoad(s, stack).then((w) => ({ ...w, errors: { client: w.errors } }));
  await sleep(SETTLE_MS);

  const [machine1, bench1] = [machineCpuMs(), process.cpuUsage(bench0)];
  const cpu1 = cpuNow();
  const [redis1, metrics1] = [await redisWork(redis), await scrapeAll()];
  const cpuMs: Record<string, number> = Object.fromEntries(Object.keys(cpu0).map((k) => [k, cpu1[k] - cpu0[k]]));
  cpuMs.load = load.cpuMs;
  const ours = Object.values(cpuMs).reduce((a, b) => a + b, 0) + (bench1.user + bench1.system) / 1000;
  const machineMs = machine1.total - machine0.total;
  const perRequest = (v: number): number => v / Math.max(1, load.requests);

  const run: Run = {
    round,
    requests: load.requests,
    requestsPerSec: load.requestsPerSec,
    p50: load.p50,
    p99: load.p99,
    errors: load.errors,
    cpuMsPerRequest: Object.fromEntries(Object.entries(cpuMs).map(([k, v]) => [k, perRequest(v)])),
    otherCpuPct: (100 * (machine1.busy - machine0.busy - ours)) / machineMs,
    stealPct: (100 * (machine1.steal - machine0.steal)) / machineMs,
    redis: redisWorkBetween(redis0, redis1),
  };
  if (s.model) {
    const operation = s.kind === 'ws' ? 'submit' : s.kind === 'grpc' ? 'infer_grpc' : (s.operation ?? 'predict');
    const delta = (i: number, name: string, match: Record<string, string>, exclude?: Record<string, string>): number =>
      metricSum(metrics1[i], name, match, exclude) - metricSum(metrics0[i], name, match, exclude);
    run.serverOk = delta(0, 'batchline_requests_total', { model: s.model, operation, outcome: 'ok' });
    run.errors.server = delta(0, 'batchline_requests_total', { model: s.model, operation }, { outcome: 'ok' });
    const jobs = delta(1, 'batchline_worker_jobs_total', { model: s.model }) + delta(2, 'batchline_worker_jobs_total', { model: s.model });
    const rows = delta(1, 'batchline_batch_rows_sum', { model: s.model }) + delta(2, 'batchline_batch_rows_sum', { model: s.model });
    const inferences =
      delta(1, 'batchline_batch_rows_count', { model: s.model }) + delta(2, 'batchline_batch_rows_count', { model: s.model });
    run.jobsPerRequest = jobs / Math.max(1, run.serverOk);
    run.rowsPerInference = rows / inferences;
  }
  return run;
}

async function ceilingRun(round: number): Promise<CeilingRun> {
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bench', 'ceiling.ts'), String(CEILING_SECONDS), '32,128'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`bench/ceiling.ts exited ${code}`))));
  });
  const r = JSON.parse(out) as { results: { batch: number; rowsPerSec: number }[] };
  return { round, rowsPerSec: Object.fromEntries(r.results.map((x) => [`batch${x.batch}`, x.rowsPerSec])) };
}

// ---- summary -------------------------------------------------------------------------------

const median = (xs: number[]): number => {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const range = (xs: number[]): [number, number] => [Math.min(...xs), Math.max(...xs)];
const fmt = (n: number | undefined, d = 0): string => (n !== undefined && Number.isFinite(n) ? n.toFixed(d) : '-');
const fmtRange = (xs: number[], d = 0): string => `${fmt(range(xs)[0], d)}-${fmt(range(xs)[1], d)}`;
const sumValues = (o: Record<string, number>): number => Object.values(o).reduce((a, b) => a + b, 0);

interface Summary {
  id: string;
  title: string;
  connections: number;
  runs: Run[];
  median: {
    requestsPerSec: number;
    p50: number;
    p99: number;
    errors: number;
    cpuMsPerRequest: Record<string, number>;
    redisCommandsPerRequest: number;
    redisCommandsPerRequestByCommand: Record<string, number>;
    redisUsecPerRequest: number;
    redisBytesInPerRequest: number;
    redisBytesOutPerRequest: number;
    jobsPerRequest?: number;
    rowsPerInference?: number;
    otherCpuPct: number;
  };
  range: { requestsPerSec: [number, number]; p50: [number, number] };
}

function summarize(s: LoadScenario, runs: Run[]): Summary {
  const per = (r: Run, v: number): number => v / Math.max(1, r.requests);
  const commands = [...new Set(runs.flatMap((r) => Object.keys(r.redis.calls)))];
  const byCommand = Object.fromEntries(commands.map((c) => [c, median(runs.map((r) => per(r, r.redis.calls[c] ?? 0)))]));
  return {
    id: s.id,
    title: s.title,
    connections: s.connections,
    runs,
    median: {
      requestsPerSec: median(runs.map((r) => r.requestsPerSec)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      errors: median(runs.map((r) => sumValues(r.errors))),
      cpuMsPerRequest: Object.fromEntries(
        Object.keys(runs[0].cpuMsPerRequest).map((k) => [k, median(runs.map((r) => r.cpuMsPerRequest[k]))]),
      ),
      redisCommandsPerRequest: median(runs.map((r) => per(r, sumValues(r.redis.calls)))),
      redisCommandsPerRequestByCommand: Object.fromEntries(Object.entries(byCommand).sort((a, b) => b[1] - a[1])),
      redisUsecPerRequest: median(runs.map((r) => per(r, r.redis.usec))),
      redisBytesInPerRequest: median(runs.map((r) => per(r, r.redis.netInputBytes))),
      redisBytesOutPerRequest: median(runs.map((r) => per(r, r.redis.netOutputBytes))),
      jobsPerRequest: runs[0].jobsPerRequest === undefined ? undefined : median(runs.map((r) => r.jobsPerRequest!)),
      rowsPerInference: runs[0].rowsPerInference === undefined ? undefined : median(runs.map((r) => r.rowsPerInference!)),
      otherCpuPct: median(runs.map((r) => r.otherCpuPct)),
    },
    range: { requestsPerSec: range(runs.map((r) => r.requestsPerSec)), p50: range(runs.map((r) => r.p50)) },
  };
}

const CPU_COLUMNS = ['api', 'worker-cpu', 'worker-gpu', 'redis', 'load'];

function report(
  summaries: Summary[],
  ceilings: CeilingRun[],
  ratios: Record<string, { median: number; runs: number[]; target: string }>,
): string {
  const lines: string[] = [];
  const errorsOf = (s: Summary): string => fmt(s.runs.reduce((a, r) => a + sumValues(r.errors), 0));
  lines.push(
    `\n${ROUNDS} rounds of ${SECONDS} s runs; medians over rounds (lowest-highest in brackets). CPU: ms per request of each process; "other CPU" is the share of the machine used by processes not ours meanwhile (a noise gauge).`,
  );
  lines.push(
    `\n| scenario | conns | requests/s | p50 ms | p99 ms | errors (all runs) | CPU ms/request: ${CPU_COLUMNS.join(' / ')} | Redis commands/request | jobs/request, rows/inference | other CPU % |`,
  );
  lines.push('|---|---|---|---|---|---|---|---|---|---|');
  for (const s of summaries) {
    const m = s.median;
    const jobs = m.jobsPerRequest === undefined ? '' : `${fmt(m.jobsPerRequest, 2)}, ${fmt(m.rowsPerInference, 1)}`;
    lines.push(
      `| ${s.title} | ${s.connections} | ${fmt(m.requestsPerSec)} (${fmtRange(s.runs.map((r) => r.requestsPerSec))}) | ${fmt(m.p50, 1)} (${fmtRange(
        s.runs.map((r) => r.p50),
        1,
      )}) | ${fmt(m.p99, 1)} | ${errorsOf(s)} | ${CPU_COLUMNS.map((k) => fmt(m.cpuMsPerRequest[k], 2)).join(' / ')} | ${fmt(m.redisCommandsPerRequest, 1)} | ${jobs} | ${fmt(m.otherCpuPct)} |`,
    );
  }
  const b = (k: string): number[] => ceilings.map((c) => c.rowsPerSec[k]);
  lines.push(
    `| ${'mlp-bench ceiling (onnxruntime-node alone, 2 threads)'} | | batch 32: ${fmt(median(b('batch32')))} rows/s (${fmtRange(b('batch32'))}); batch 128: ${fmt(median(b('batch128')))} (${fmtRange(b('batch128'))}) | | | | | | | |`,
  );
  lines.push(`\nRedis work per request (median; commands that Lua scripts run are counted as well as the scripts):`);
  lines.push(`\n| scenario | commands | by command (>= 0.05 a request) | Redis µs | bytes in / out |`);
  lines.push('|---|---|---|---|---|');
  for (const s of summaries) {
    const m = s.median;
    const by = Object.entries(m.redisCommandsPerRequestByCommand)
      .filter(([, v]) => v >= 0.05)
      .map(([k, v]) => `${k} ${fmt(v, 2)}`)
      .join(', ');
    lines.push(
      `| ${s.title} (${s.connections}) | ${fmt(m.redisCommandsPerRequest, 2)} | ${by} | ${fmt(m.redisUsecPerRequest, 1)} | ${fmt(m.redisBytesInPerRequest)} / ${fmt(m.redisBytesOutPerRequest)} |`,
    );
  }
  lines.push(`\nRatios (each round's own ratio, median over rounds, range in brackets):`);
  for (const [k, r] of Object.entries(ratios)) lines.push(`- ${k}: ${fmt(r.median, 2)} (${fmtRange(r.runs, 2)}); target ${r.target}`);
  return lines.join('\n');
}

// ---- main ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  // BENCH_SCENARIOS=floor,cache-hit,... runs only those (quick checks of one change); the ratios need their pairs.
  const only = process.env.BENCH_SCENARIOS?.split(',').filter(Boolean);
  const all = scenarios().filter((s) => !only || only.includes(s.id));
  const dir = benchDir();
  log(
    `machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}; ${ROUNDS} rounds x ${all.length} scenarios x ${SECONDS} s; logs and wrk scripts in ${dir}`,
  );
  const redisServer = await startRedis(dir);
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 3 });
  const runs = new Map<string, Run[]>(all.map((s) => [s.id, []]));
  const ceilings: CeilingRun[] = [];
  let stack: Stack | undefined;
  let stacks = 0;
  let workerShapes: Record<string, unknown> = {};
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of round % 2 === 0 ? all : [...all].reverse()) {
        if (s.kind === 'ceiling') {
          if (stack) await stopStack(stack);
          stack = undefined;
          const c = await ceilingRun(round);
          ceilings.push(c);
          log(
            `round ${round + 1} ${s.id}: ${Object.entries(c.rowsPerSec)
              .map(([k, v]) => `${k} ${fmt(v)} rows/s`)
              .join(', ')}`,
          );
          continue;
        }
        if (!stack) {
          stack = await startStack(redisServer.url, dir, ++stacks);
          workerShapes = stack.workerShapes;
          log(`stack ${stacks} up: ${JSON.stringify(workerShapes)}`);
          await warmUp(all, stack, dir);
        }
        const r = await measure(s, stack, redis, redisServer.pid, round, dir);
        runs.get(s.id)!.push(r);
        log(
          `round ${round + 1} ${s.id}: ${fmt(r.requestsPerSec)} req/s, p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms, errors ${JSON.stringify(r.errors)}, Redis ${fmt(sumValues(r.redis.calls) / Math.max(1, r.requests), 1)} cmds/req, CPU ms/req ${Object.entries(
            r.cpuMsPerRequest,
          )
            .map(([k, v]) => `${k} ${fmt(v, 2)}`)
            .join(' ')}, other CPU ${fmt(r.otherCpuPct)}%, steal ${fmt(r.stealPct)}%`,
        );
      }
    }
  } finally {
    if (stack) await stopStack(stack);
    redis.disconnect();
    await redisServer.stop();
  }

  const loadScenarios = all.filter((s): s is LoadScenario => s.kind !== 'ceiling');
  const summaries = loadScenarios.map((s) => summarize(s, runs.get(s.id)!));
  const ratios = ratiosOf(runs, ceilings);
  const text = report(summaries, ceilings, ratios);
  console.log(text);

  const outDir = join(ROOT, 'bench', 'snapshots');
  mkdirSync(outDir, { recursive: true });
  const date = new Date().toISOString().slice(0, 10);
  let file = join(outDir, `${date}-path.json`);
  for (let i = 2; existsSync(file); i++) file = join(outDir, `${date}-path-${i}.json`);
  const ceilingScenario = all.find((s): s is CeilingScenario => s.kind === 'ceiling');
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        command: 'npm run bench:path',
        settings: {
          seconds: SECONDS,
          rounds: ROUNDS,
          ceilingSecondsPerBatch: CEILING_SECONDS,
          wrk: 'wrk -t2 --latency, Lua-rotated bodies',
          wsClient: 'bench/load-client.ts, 2 processes',
        },
        machine: { cores: availableParallelism(), cpu: cpus()[0]?.model, node: process.version },
        stack: {
          processes: 'cli/main.ts serve, worker --pool cpu, worker --pool gpu (as npm start), default sizing, NODE_ENV=production',
          workerShapes,
        },
        scenarios: summaries,
        ceiling: ceilingScenario ? { title: ceilingScenario.title, runs: ceilings } : undefined,
        ratios,
        report: text,
      },
      null,
      2,
    )}\n`,
  );
  log(`saved ${file.slice(ROOT.length)}`);
}

/** A second of each HTTP scenario after a stack starts, so the first measured run does not pay for JIT and connection set-up. */
async function warmUp(all: Scenario[], stack: Stack, dir: string): Promise<void> {
  for (const s of all)
    if (s.kind === 'http' && s.connections === 64)
      await runWrk({
        url: s.path ? stack.base + s.path : stack.url,
        bodies: s.bodies,
        headers: s.headers,
        connections: 16,
        seconds: 1,
        dir,
        name: `warm-${s.id}`,
      });
}

function ratiosOf(runs: Map<string, Run[]>, ceilings: CeilingRun[]): Record<string, { median: number; runs: number[]; target: string }> {
  const rounds = Array.from({ length: ROUNDS }, (_, i) => i);
  const at = (id: string, round: number): Run | undefined => runs.get(id)!.find((r) => r.round === round);
  const ratio = (a: string, b: string): number[] => rounds.map((i) => at(a, i)!.requestsPerSec / at(b, i)!.requestsPerSec);
  const ceilingOf = (i: number): number => Math.max(...Object.values(ceilings.find((c) => c.round === i)!.rowsPerSec));
  const entry = (xs: number[], target: string) => ({ median: median(xs), runs: xs, target });
  // A run of some scenarios (BENCH_SCENARIOS) reports the ratios whose both sides it measured.
  const ran = (...ids: string[]): boolean => ids.every((id) => (id === 'ceiling' ? ceilings.length > 0 : runs.has(id)));
  const out: Record<string, { median: number; runs: number[]; target: string }> = {};
  if (ran('spam-b64-64', 'floor')) out['spam-mlp base64, 64 conns / floor'] = entry(ratio('spam-b64-64', 'floor'), '>= 0.50');
  if (ran('spam-json-64', 'floor')) out['spam-mlp JSON, 64 conns / floor'] = entry(ratio('spam-json-64', 'floor'), '>= 0.50');
  if (ran('cache-hit', 'floor')) out['cache hit / floor'] = entry(ratio('cache-hit', 'floor'), '>= 0.90');
  if (ran('mlp-bench-64', 'ceiling'))
    out['mlp-bench rows/s / ceiling (best batch, same round)'] = entry(
      rounds.map((i) => at('mlp-bench-64', i)!.requestsPerSec / ceilingOf(i)),
      '>= 0.35',
    );
  // The inference protocol's doors (issue 25): mlp-bench, one 512-float row a request, against the ceiling at
  // batch 32 (the most the gpu pool merges for it) and at its best batch; API CPU against the floor's.
  const ceilingAt = (i: number, k: string): number => ceilings.find((c) => c.round === i)!.rowsPerSec[k];
  const apiCpu = (id: string, i: number): number => at(id, i)!.cpuMsPerRequest.api;
  for (const [id, door] of [
    ['rest-bin-mlp-64', 'REST binary'],
    ['grpc-mlp-64', 'gRPC'],
  ]) {
    if (!ran(id, 'ceiling')) continue;
    out[`mlp-bench ${door} rows/s / ceiling at batch 32 (same round)`] = entry(
      rounds.map((i) => at(id, i)!.requestsPerSec / ceilingAt(i, 'batch32')),
      '>= 0.35',
    );
    out[`mlp-bench ${door} rows/s / ceiling (best batch, same round)`] = entry(
      rounds.map((i) => at(id, i)!.requestsPerSec / ceilingOf(i)),
      '>= 0.35',
    );
  }
  for (const id of ['rest-bin-mlp-64', 'rest-bin-spam-64'])
    if (ran(id, 'floor'))
      out[`API CPU per request, ${id} / floor`] = entry(
        rounds.map((i) => apiCpu(id, i) / apiCpu('floor', i)),
        '<= 1.3',
      );
  if (ran('grpc-spam-64', 'spam-b64-64'))
    out['spam-mlp gRPC / GraphQL base64 throughput, 64'] = entry(ratio('grpc-spam-64', 'spam-b64-64'), '>= 1.5');
  if (ran('grpc-mlp-64', 'mlp-bench-64'))
    out['mlp-bench gRPC / GraphQL base64 throughput, 64'] = entry(ratio('grpc-mlp-64', 'mlp-bench-64'), '-');
  if (ran('rest-bin-mlp-64', 'mlp-bench-64'))
    out['mlp-bench REST binary / GraphQL base64 throughput, 64'] = entry(ratio('rest-bin-mlp-64', 'mlp-bench-64'), '-');
  if (ran('ws-submit-64', 'spam-json-64')) {
    // The asynchronous path against the synchronous one of the same model (issue 24's targets).
    out['spam-mlp submit + subscribe (WebSocket) / predict (wrk), 64 conns, requests/s'] = entry(
      ratio('ws-submit-64', 'spam-json-64'),
      '>= 0.6',
    );
    const serverCpu = (r: Run): number => ['api', 'worker-cpu', 'worker-gpu', 'redis'].reduce((a, k) => a + (r.cpuMsPerRequest[k] ?? 0), 0);
    const allCpu = (r: Run): number => Object.values(r.cpuMsPerRequest).reduce((a, b) => a + b, 0);
    out['CPU per async / sync prediction, API + workers + Redis'] = entry(
      rounds.map((i) => serverCpu(at('ws-submit-64', i)!) / serverCpu(at('spam-json-64', i)!)),
      '<= 1.5',
    );
    out['CPU per async / sync prediction, load generators too (node client / wrk)'] = entry(
      rounds.map((i) => allCpu(at('ws-submit-64', i)!) / allCpu(at('spam-json-64', i)!)),
      '<= 1.5',
    );
    out['Redis commands per async prediction'] = entry(
      runs.get('ws-submit-64')!.map((r) => sumValues(r.redis.calls) / Math.max(1, r.requests)),
      '<= 15',
    );
  }
  if (ran('spam-b64-16'))
    out['spam-mlp base64 p50 at 16 conns, ms'] = entry(
      runs.get('spam-b64-16')!.map((r) => r.p50),
      '<= 5',
    );
  if (ran('spam-json-16'))
    out['spam-mlp JSON p50 at 16 conns, ms'] = entry(
      runs.get('spam-json-16')!.map((r) => r.p50),
      '<= 5',
    );
  return out;
}

await main();
process.exit(0);
