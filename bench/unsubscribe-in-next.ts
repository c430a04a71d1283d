/**
 * Results lost by the released graphql-ws client when it unsubscribes inside `next`, and what
 * the server's mitigation costs: `npm run bench:unsubscribe`.
 *
 * One private Redis, one cpu worker, and two API processes that differ only in
 * `http.wsCompleteGraceMs`: `off` (0, `complete` sent at once, as before the mitigation) and `on`
 * (the default). Each round runs both configurations one after the other, with the order
 * alternating between rounds. A run is a client process (bench/one-result-client.ts) running
 * 64 loops over 8 graphql-ws connections of the pattern: submitPrediction on spam-mlp,
 * subscribe from the mutation's `next`, unsubscribe inside the subscription's `next`. The client
 * counts subscriptions that completed without their result, mutations that completed without
 * theirs, operations unanswered within 10 s, and the results the server had (`prediction(id)`
 * says COMPLETED) but never delivered.
 *
 * The cost is measured apart, with clients that keep their socket between operations
 * (`lazyCloseTimeout` 1 s): a lazy client closes its socket whenever its last operation ends
 * and reconnects for the next, which a correct lock count meets often in these loops, and the
 * released client's broken count (negative after double releases) hides. Both patterns run:
 * unsubscribing inside `next`, and never unsubscribing (how late `complete` comes after the
 * result). Per configuration: the API's CPU per iteration, its RSS (the highest sampled) and
 * heap, and iteration latency.
 *
 * BENCH_ITERATIONS (per configuration, all rounds, the loss runs; default 51000), BENCH_ROUNDS
 * (3), BENCH_COST_ITERATIONS (per configuration and pattern, the cost runs; default 9000).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LoopCounts, LoopOptions } from '../harness/one-result-loops.ts';
import { benchDir, cpuMsOf, freePort, machineCpuMs, ROOT, startCli, startRedis, type Proc } from './processes.ts';

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 51_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const COST_ITERATIONS = Number(process.env.BENCH_COST_ITERATIONS ?? 9000);
const CONFIGS = { off: '0', on: '' } as const;
type Config = keyof typeof CONFIGS;

interface ClientResult extends LoopCounts {
  completedButUndelivered: number;
  clientCpuMs: number;
}

type Phase = 'loss' | 'cost';

interface Run {
  config: Config;
  phase: Phase;
  unsubscribe: LoopOptions['unsubscribe'];
  counts: Omit<ClientResult, 'undeliveredIds' | 'latencyMs' | 'completeAfterResultMs'>;
  latencyMs: number[];
  completeAfterResultMs: number[];
  apiCpuMs: number;
  workerCpuMs: number;
  machineBusyMs: number;
  apiRssMaxMiB: number;
  apiHeapUsedMiB: number;
}

const dir = benchDir();
const redis = await startRedis(dir);
const env = (port: number): Record<string, string> => ({
  BATCHLINE_REDIS_URL: redis.url,
  BATCHLINE_REDIS_PREFIX: 'bench-unsub',
  BATCHLINE_MODELS: join(ROOT, 'models'),
  BATCHLINE_HOST: '127.0.0.1',
  BATCHLINE_PORT: String(port),
  NODE_ENV: 'production',
});
const procs: Proc[] = [];
const apis = {} as Record<Config, { proc: Proc; port: number }>;
try {
  procs.push(await startCli('worker-cpu', ['worker', '--pool', 'cpu'], env(0), dir, /"msg":"worker started"/));
  const worker = procs[0];
  for (const config of Object.keys(CONFIGS) as Config[]) {
    const port = await freePort();
    const grace: Record<string, string> = CONFIGS[config] ? { BATCHLINE_WS_COMPLETE_GRACE_MS: CONFIGS[config] } : {};
    const proc = await startCli(`api-${config}`, ['serve'], { ...env(port), ...grace }, dir, /"msg":"API listening"/);
    procs.push(proc);
    apis[config] = { proc, port };
  }

  const rssMiB = (pid: number): number => {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  };
  const heapUsedMiB = async (port: number): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const m = /^batchline_process_nodejs_heap_size_used_bytes(?:\{[^}]*\})? (\S+)/m.exec(text);
    return m ? Number(m[1]) / 2 ** 20 : NaN;
  };

  const runClient = (options: LoopOptions): Promise<ClientResult> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [join(ROOT, 'bench', 'one-result-client.ts'), JSON.stringify(options)], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as ClientResult) : reject(new Error(`client exited ${code}`))));
    });

  async function run(config: Config, phase: Phase, unsubscribe: LoopOptions['unsubscribe'], iterations: number): Promise<Run> {
    const { proc, port } = apis[config];
    const before = { api: cpuMsOf(proc.pid), worker: cpuMsOf(worker.pid), machine: machineCpuMs().busy };
    let rssMax = rssMiB(proc.pid);
    const sampler = setInterval(() => (rssMax = Math.max(rssMax, rssMiB(proc.pid))), 250);
    const result = await runClient({
      transport: 'ws',
      url: `http://127.0.0.1:${port}/graphql`,
      ws: `ws://127.0.0.1:${port}/graphql`,
      connections: 8,
      loopsPerConnection: 8,
      iterations,
      unsubscribe,
      model: 'spam-mlp',
      rowWidth: 64,
      boundMs: 10_000,
      lazyCloseTimeoutMs: phase === 'cost' ? 1000 : 0,
    }).finally(() => clearInterval(sampler));
    const { undeliveredIds: _ids, latencyMs, completeAfterResultMs, ...counts } = result;
    return {
      config,
      phase,
      unsubscribe,
      counts,
      latencyMs,
      completeAfterResultMs,
      apiCpuMs: cpuMsOf(proc.pid) - before.api,
      workerCpuMs: cpuMsOf(worker.pid) - before.worker,
      machineBusyMs: machineCpuMs().busy - before.machine,
      apiRssMaxMiB: rssMax,
      apiHeapUsedMiB: await heapUsedMiB(port),
    };
  }

  const runs: Run[] = [];
  const log = (r: Run): Run => {
    console.error(
      `${r.phase} ${r.config.padEnd(3)} ${r.unsubscribe.padEnd(7)} ${r.counts.iterations} iterations in ${(r.counts.elapsedMs / 1000).toFixed(1)} s: ` +
        `${r.counts.endedWithoutResult} ended without result, ${r.counts.submitsWithoutAnswer} submits without answer, ` +
        `${r.counts.unanswered} unanswered, ${r.counts.completedButUndelivered} completed on the server but undelivered, ` +
        `${r.counts.closes['1000'] ?? 0} sockets closed by the client (1000)`,
    );
    return r;
  };
  // Warm-up (not counted): both APIs, a few hundred iterations each.
  for (const config of Object.keys(CONFIGS) as Config[]) await run(config, 'loss', 'in-next', 500);
  for (let round = 0; round < ROUNDS; round++) {
    const order: Config[] = round % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
    for (const config of order) runs.push(log(await run(config, 'loss', 'in-next', Math.ceil(ITERATIONS / ROUNDS))));
    for (const unsubscribe of ['in-next', 'never'] as const)
      for (const config of order) runs.push(log(await run(config, 'cost', unsubscribe, Math.ceil(COST_ITERATIONS / ROUNDS))));
  }

  const quantile = (xs: number[], q: number): number => {
    if (!xs.length) return NaN;
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(q * s.length))];
  };
  const median = (xs: number[]): number => quantile(xs, 0.5);
  const round2 = (x: number): number => Math.round(x * 100) / 100;
  const summary: Record<string, Record<string, number>> = {};
  const groups = [
    ['loss', 'in-next'],
    ['cost', 'in-next'],
    ['cost', 'never'],
  ] as const;
  for (const [phase, unsubscribe] of groups) {
    for (const config of Object.keys(CONFIGS) as Config[]) {
      const rs = runs.filter((r) => r.config === config && r.phase === phase && r.unsubscribe === unsubscribe);
      const sum = (k: keyof Run['counts']): number => rs.reduce((a, r) => a + (r.counts[k] as number), 0);
      const closes1000 = rs.reduce((a, r) => a + (r.counts.closes['1000'] ?? 0), 0);
      summary[`${phase} ${unsubscribe} ${config}`] = {
        iterations: sum('iterations'),
        results: sum('results'),
        endedWithoutResult: sum('endedWithoutResult'),
        submitsWithoutAnswer: sum('submitsWithoutAnswer'),
        unanswered: sum('unanswered'),
        completedButUndelivered: sum('completedButUndelivered'),
        duplicateNexts: sum('duplicateNexts'),
        errors: sum('errors'),
        closes1000,
        pingsPerSubscription: round2(sum('pings') / sum('results')),
        iterationsPerSecond: round2(median(rs.map((r) => (r.counts.iterations / r.counts.elapsedMs) * 1000))),
        apiCpuMsPerIteration: round2(median(rs.map((r) => r.apiCpuMs / r.counts.iterations))),
        workerCpuMsPerIteration: round2(median(rs.map((r) => r.workerCpuMs / r.counts.iterations))),
        clientCpuMsPerIteration: round2(median(rs.map((r) => r.counts.clientCpuMs / r.counts.iterations))),
        machineBusyMsPerIteration: round2(median(rs.map((r) => r.machineBusyMs / r.counts.iterations))),
        apiRssMaxMiB: round2(Math.max(...rs.map((r) => r.apiRssMaxMiB))),
        apiHeapUsedMiBMedian: round2(median(rs.map((r) => r.apiHeapUsedMiB))),
        latencyP50Ms: round2(
          quantile(
            rs.flatMap((r) => r.latencyMs),
            0.5,
          ),
        ),
        latencyP99Ms: round2(
          quantile(
            rs.flatMap((r) => r.latencyMs),
            0.99,
          ),
        ),
        completeAfterResultP50Ms: round2(
          quantile(
            rs.flatMap((r) => r.completeAfterResultMs),
            0.5,
          ),
        ),
        completeAfterResultP99Ms: round2(
          quantile(
            rs.flatMap((r) => r.completeAfterResultMs),
            0.99,
          ),
        ),
        completeAfterResultMaxMs: round2(
          quantile(
            rs.flatMap((r) => r.completeAfterResultMs),
            1,
          ),
        ),
      };
    }
  }
  const ratio = (group: string, k: string): number => round2(summary[`${group} on`][k] / summary[`${group} off`][k]);
  const ratios: Record<string, number> = {};
  for (const group of ['cost in-next', 'cost never']) {
    ratios[`${group}: iterations/s, on / off`] = ratio(group, 'iterationsPerSecond');
    ratios[`${group}: API CPU per iteration, on / off`] = ratio(group, 'apiCpuMsPerIteration');
    ratios[`${group}: machine CPU per iteration, on / off`] = ratio(group, 'machineBusyMsPerIteration');
    ratios[`${group}: latency p50, on / off`] = ratio(group, 'latencyP50Ms');
    ratios[`${group}: API RSS max, on / off`] = ratio(group, 'apiRssMaxMiB');
  }
  console.table(summary);
  console.table(ratios);
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  const file = join(ROOT, 'bench', 'results', `unsubscribe-in-next-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        iterations: ITERATIONS,
        rounds: ROUNDS,
        costIterations: COST_ITERATIONS,
        summary,
        ratios,
        runs: runs.map(({ latencyMs: _l, completeAfterResultMs: _c, ...r }) => r),
      },
      null,
      2,
    ),
  );
  console.error(`written ${file}`);
} finally {
  for (const p of [...procs].reverse()) await p.stop();
  await redis.stop();
}
