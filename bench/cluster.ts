/**
 * `npm run bench:cluster`: one Redis against a Redis Cluster of 3 masters (each with its
 * replica, as the tests and production run it), in one run on this machine, interleaved.
 *
 * Three stacks run side by side, each started as `npm start` starts one (`cli/main.ts serve`
 * and `worker --pool cpu`, processes of their own, logs to files): one on a private
 * redis-server, two on a private cluster (harness/local-cluster.ts), one with the cpu queue in one
 * slot, one with it in 3 shards (`queue.shards.cpu: 3`, one per master). They serve spam-mlp (cpu
 * pool, cache off, 64 FP32 features), loaded by bench/load-client.ts (two processes, closed
 * loop) in two scenarios: a synchronous `predict` over HTTP, and `submitPrediction` then
 * `predictionResult` over WebSocket. Rounds visit the backends in one order, then in
 * reverse, so a drift of the shared machine falls on all alike; figures are medians.
 *
 * For every run and every Redis node: commands per request (`INFO commandstats` deltas, the
 * commands scripts run included), bytes in and out per request (`INFO stats`), and the node's
 * CPU per request (`INFO cpu`); requests/s, p50, p99, errors; CPU per request of the API and
 * worker (/proc). This machine has 2 cores for everything, so the cluster cannot show its
 * throughput here: the per-node commands, bytes and CPU per request are the figures that scale
 * (k8s/README.md, "Scaling past one Redis", derives a plan from them).
 *
 * Env: BENCH_SECONDS (per run, default 8), BENCH_ROUNDS (default 2, each runs both orders),
 * BENCH_CONNECTIONS (default 32). Writes bench/results/cluster-<time>.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { LoadSpec } from './load-client.ts';
import {
  runLoadClients,
  benchDir,
  cpuMsOf,
  freePort,
  redisWork,
  redisWorkBetween,
  ROOT,
  startCli,
  startRedis,
  type Proc,
  type RedisWork,
} from './processes.ts';
import { startLocalCluster, type LocalCluster } from '../harness/local-cluster.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 2));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const SETTLE_MS = 500;

const log = (msg: string): void => void process.stderr.write(`[bench:cluster ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const round2 = (x: number): number => Math.round(x * 100) / 100;

/** One Redis; the cluster with one cpu queue; the cluster with the cpu pool in 3 shards (`queue.shards.cpu`). */
type Backend = 'single' | 'cluster' | 'cluster-shards3';
const BACKENDS: Backend[] = ['single', 'cluster', 'cluster-shards3'];
type ScenarioId = 'predict-http' | 'submit-ws';
const SCENARIOS: ScenarioId[] = ['predict-http', 'submit-ws'];

interface RedisNode {
  name: string;
  role: 'single' | 'master' | 'replica';
  port: number;
  pid: number | undefined;
}

interface Stack {
  backend: Backend;
  url: string;
  ws: string;
  procs: Proc[];
  nodes: () => Promise<RedisNode[]>;
}

async function startStack(
  backend: Backend,
  redisEnv: Record<string, string>,
  dir: string,
  nodes: () => Promise<RedisNode[]>,
): Promise<Stack> {
  const port = await freePort();
  const env = {
    ...redisEnv,
    BATCHLINE_REDIS_PREFIX: `bench-cluster-${backend}`,
    BATCHLINE_MODELS: join(ROOT, 'models'),
    BATCHLINE_PORT: String(port),
    BATCHLINE_HOST: '127.0.0.1',
    BATCHLINE_MAINTENANCE: 'false',
    BATCHLINE_LOG_REQUESTS: 'off',
    NODE_ENV: 'production',
  };
  const started = /"msg":"worker started"/;
  const procs = [
    await startCli(`${backend}-worker`, ['worker', '--pool', 'cpu'], env, dir, started),
    await startCli(`${backend}-api`, ['serve'], env, dir, /"msg":"API listening"/),
  ];
  return { backend, url: `http://127.0.0.1:${port}/graphql`, ws: `ws://127.0.0.1:${port}/graphql`, procs, nodes };
}

async function load(
  stack: Stack,
  scenario: ScenarioId,
): Promise<{ requests: number; perSec: number; p50: number; p99: number; errors: Record<string, number>; cpuMs: number }> {
  const procs = 2;
  const specs: LoadSpec[] = Array.from({ length: procs }, (_, i) => ({
    url: stack.url,
    ws: stack.ws,
    model: 'spam-mlp',
    rowWidth: 64,
    rowsPerRequest: 1,
    encoding: 'json',
    transport: scenario === 'predict-http' ? 'http' : 'ws',
    loop: 'closed',
    concurrency: Math.floor(CONNECTIONS / procs) + (i < CONNECTIONS % procs ? 1 : 0),
    rate: 0,
    durationMs: SECONDS * 1000,
    maxInFlight: CONNECTIONS,
  }));
  const results = await runLoadClients(specs);
  const lat = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const at = (q: number): number => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] ?? NaN;
  const windowMs = Math.max(SECONDS * 1000, ...results.map((r) => r.elapsedMs));
  const errors: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.codes)) errors[k] = (errors[k] ?? 0) + v;
  return {
    requests: lat.length,
    perSec: lat.length / (windowMs / 1000),
    p50: at(0.5),
    p99: at(0.99),
    errors,
    cpuMs: results.reduce((a, r) => a + r.cpuMs, 0),
  };
}

interface NodeFigures {
  name: string;
  role: RedisNode['role'];
  commandsPerRequest: number;
  callsPerRequest: Record<string, number>;
  bytesInPerRequest: number;
  bytesOutPerRequest: number;
  cpuMsPerRequest: number;
}

interface Run {
  backend: Backend;
  scenario: ScenarioId;
  round: number;
  requests: number;
  requestsPerSec: number;
  p50: number;
  p99: number;
  errors: Record<string, number>;
  nodes: NodeFigures[];
  /** Summed over the Redis nodes (masters and replicas). */
  redisCommandsPerRequest: number;
  redisCpuMsPerRequest: number;
  redisBytesPerRequest: number;
  /** The busiest master's share: what one node must carry. */
  busiestNodeCommandsPerRequest: number;
  busiestNodeCpuMsPerRequest: number;
  processCpuMsPerRequest: Record<string, number>;
}

async function nodeState(n: RedisNode): Promise<{ work: RedisWork; cpuMs: number }> {
  const r = new Redis(n.port, '127.0.0.1', { maxRetriesPerRequest: 1, lazyConnect: true });
  r.on('error', () => {});
  try {
    await r.connect();
    const cpu = await r.info('cpu');
    const num = (key: string): number => Number(new RegExp(`${key}:([\\d.]+)`).exec(cpu)![1]);
    return { work: await redisWork(r), cpuMs: (num('used_cpu_user') + num('used_cpu_sys')) * 1000 };
  } finally {
    r.disconnect();
  }
}

async function measure(stack: Stack, scenario: ScenarioId, round: number): Promise<Run> {
  await sleep(SETTLE_MS);
  const nodes = await stack.nodes();
  const before = await Promise.all(nodes.map(nodeState));
  const proc0 = Object.fromEntries(stack.procs.map((p) => [p.name, cpuMsOf(p.pid)]));
  const l = await load(stack, scenario);
  await sleep(SETTLE_MS);
  const after = await Promise.all(nodes.map(nodeState));
  const per = (x: number): number => round2(x / Math.max(1, l.requests));
  const perFine = (x: number): number => Math.round((x / Math.max(1, l.requests)) * 1000) / 1000;
  const figures: NodeFigures[] = nodes.map((n, i) => {
    const w = redisWorkBetween(before[i].work, after[i].work);
    const commands = Object.values(w.calls).reduce((a, b) => a + b, 0);
    return {
      name: n.name,
      role: n.role,
      commandsPerRequest: per(commands),
      callsPerRequest: Object.fromEntries(Object.entries(w.calls).map(([k, v]) => [k, per(v)])),
      bytesInPerRequest: Math.round(w.netInputBytes / Math.max(1, l.requests)),
      bytesOutPerRequest: Math.round(w.netOutputBytes / Math.max(1, l.requests)),
      cpuMsPerRequest: perFine(after[i].cpuMs - before[i].cpuMs),
    };
  });
  const masters = figures.filter((f) => f.role !== 'replica');
  return {
    backend: stack.backend,
    scenario,
    round,
    requests: l.requests,
    requestsPerSec: Math.round(l.perSec),
    p50: round2(l.p50),
    p99: round2(l.p99),
    errors: l.errors,
    nodes: figures,
    redisCommandsPerRequest: round2(figures.reduce((a, f) => a + f.commandsPerRequest, 0)),
    redisCpuMsPerRequest: Math.round(figures.reduce((a, f) => a + f.cpuMsPerRequest, 0) * 1000) / 1000,
    redisBytesPerRequest: figures.reduce((a, f) => a + f.bytesInPerRequest + f.bytesOutPerRequest, 0),
    busiestNodeCommandsPerRequest: Math.max(...masters.map((f) => f.commandsPerRequest)),
    busiestNodeCpuMsPerRequest: Math.max(...masters.map((f) => f.cpuMsPerRequest)),
    processCpuMsPerRequest: {
      ...Object.fromEntries(stack.procs.map((p) => [p.name.replace(`${stack.backend}-`, ''), per(cpuMsOf(p.pid) - proc0[p.name])])),
      load: per(l.cpuMs),
    },
  };
}

const dir = benchDir();
let cluster: LocalCluster | undefined;
const stacks: Stack[] = [];
const stopAll = async (): Promise<void> => {
  for (const s of stacks) for (const p of s.procs) await p.stop();
  await single?.stop();
  await cluster?.stop();
};
let single: Awaited<ReturnType<typeof startRedis>> | undefined;
try {
  log(`starting a redis-server and a 3-master cluster (3 replicas); ${availableParallelism()} cores (${cpus()[0]?.model ?? '?'})`);
  single = await startRedis(dir);
  cluster = await startLocalCluster({ masters: 3, replicas: 1, nodeTimeoutMs: 5000 });
  const singleNode: RedisNode = { name: 'redis', role: 'single', port: Number(new URL(single.url).port), pid: single.pid };
  const clusterNodes = async (): Promise<RedisNode[]> => {
    const topology = await cluster!.topology();
    return cluster!.nodes.map((n) => {
      const t = topology.find((x) => x.port === n.port);
      return { name: `${t?.role ?? 'node'}:${n.port}`, role: t?.role === 'master' ? 'master' : 'replica', port: n.port, pid: n.pid };
    });
  };
  stacks.push(await startStack('single', { BATCHLINE_REDIS_URL: single.url }, dir, async () => [singleNode]));
  const onCluster = { BATCHLINE_REDIS_CLUSTER: cluster.seeds, BATCHLINE_REDIS_URL: 'redis://127.0.0.1:1' };
  stacks.push(await startStack('cluster', onCluster, dir, clusterNodes));
  stacks.push(await startStack('cluster-shards3', { ...onCluster, BATCHLINE_QUEUE_SHARDS_CPU: '3' }, dir, clusterNodes));
  // Warm-up: JIT, connections, the first jobs of each scenario.
  for (const s of stacks) for (const sc of SCENARIOS) await load(s, sc).catch(() => undefined);

  const runs: Run[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    for (const order of [stacks, [...stacks].reverse()]) {
      for (const stack of order) {
        for (const scenario of SCENARIOS) {
          const run = await measure(stack, scenario, round);
          log(
            `${stack.backend} ${scenario}: ${run.requestsPerSec} req/s, p50 ${run.p50} ms, p99 ${run.p99} ms, Redis ${run.redisCommandsPerRequest} cmds/req (busiest master ${run.busiestNodeCommandsPerRequest}), ${run.redisCpuMsPerRequest} Redis CPU ms/req, errors ${JSON.stringify(run.errors)}`,
          );
          runs.push(run);
        }
      }
    }
  }

  const summary: Record<string, unknown> = {};
  for (const scenario of SCENARIOS) {
    const of = (b: Backend) => runs.filter((r) => r.backend === b && r.scenario === scenario);
    const med = (b: Backend, f: (r: Run) => number): number => round2(median(of(b).map(f)));
    const row = (b: Backend) => ({
      requestsPerSec: med(b, (r) => r.requestsPerSec),
      p50: med(b, (r) => r.p50),
      p99: med(b, (r) => r.p99),
      redisCommandsPerRequest: med(b, (r) => r.redisCommandsPerRequest),
      busiestNodeCommandsPerRequest: med(b, (r) => r.busiestNodeCommandsPerRequest),
      redisCpuMsPerRequest: Math.round(median(of(b).map((r) => r.redisCpuMsPerRequest)) * 1000) / 1000,
      busiestNodeCpuMsPerRequest: Math.round(median(of(b).map((r) => r.busiestNodeCpuMsPerRequest)) * 1000) / 1000,
      redisBytesPerRequest: med(b, (r) => r.redisBytesPerRequest),
      apiCpuMsPerRequest: med(b, (r) => r.processCpuMsPerRequest.api),
      workerCpuMsPerRequest: med(b, (r) => r.processCpuMsPerRequest.worker),
      errors: of(b).reduce((a, r) => a + Object.values(r.errors).reduce((x, y) => x + y, 0), 0),
      perNode: of(b).at(-1)?.nodes,
    });
    const s = row('single');
    const entry: Record<string, unknown> = { single: s };
    for (const b of BACKENDS.filter((x) => x !== 'single')) {
      const c = row(b);
      entry[b] = c;
      entry[`${b} / single`] = {
        requestsPerSec: round2(c.requestsPerSec / s.requestsPerSec),
        redisCommandsPerRequest: round2(c.redisCommandsPerRequest / s.redisCommandsPerRequest),
        busiestNodeCommandsPerRequest: round2(c.busiestNodeCommandsPerRequest / s.redisCommandsPerRequest),
        redisCpuMsPerRequest: round2(c.redisCpuMsPerRequest / s.redisCpuMsPerRequest),
        busiestNodeCpuMsPerRequest: round2(c.busiestNodeCpuMsPerRequest / s.redisCpuMsPerRequest),
      };
    }
    summary[scenario] = entry;
  }
  const out = {
    at: new Date().toISOString(),
    machine: { cores: availableParallelism(), cpu: cpus()[0]?.model, node: process.version },
    settings: {
      seconds: SECONDS,
      rounds: ROUNDS,
      connections: CONNECTIONS,
      model: 'spam-mlp',
      cluster: '3 masters + 3 replicas, loopback; cluster-shards3: queue.shards.cpu 3',
    },
    summary,
    runs,
  };
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  const file = join(ROOT, 'bench', 'results', `cluster-${out.at.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(out, null, 2));
  process.stdout.write(
    JSON.stringify(
      { summary: Object.fromEntries(Object.entries(summary).map(([k, v]) => [k, { ...(v as object) }])) },
      (k, v) => (k === 'perNode' ? undefined : v),
      2,
    ) + '\n',
  );
  log(`wrote ${file}`);
} finally {
  await stopAll();
}
