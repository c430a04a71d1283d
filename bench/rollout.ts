/**
 * `npm run bench:rollout`: what a rollout costs the serving path. CPU per request of every
 * process (API, worker, Redis) with a 10% shadow and 10% payload capture on spam-mlp, against
 * the same model with neither, in one run on this machine (about 2 minutes at the defaults; not
 * part of `npm test`).
 *
 * A real stack as `npm start` runs one (`serve` and `worker --pool cpu`, each its own process,
 * NODE_ENV=production, logs to files) on a private redis-server serves spam-mlp from a
 * repository of its own: versions 1 and 2 are the same graph, so the shadow's runs cost what
 * the stable's do. wrk sends base64 tensors of real held-out mail on 16 connections. The two
 * configurations are switched live (setRollout, setCapture: the admin mutations), interleaved
 * round by round, every other round in reverse order; each figure is the median over rounds.
 *
 * Env: BENCH_SECONDS (per run, default 10), BENCH_ROUNDS (default 5).
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify, parse } from 'yaml';
import { benchDir, cpuMsOf, freePort, ROOT, startCli, startRedis, type Proc } from './processes.ts';
import { scenarios, type HttpScenario } from './path-scenarios.ts';
import { runWrk } from './wrk.ts';
import { metricSum, scrape } from './prometheus.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5));
const CONNECTIONS = 16;
/** Mirrored runs and capture writes still out when the load stops land before the next run starts. */
const SETTLE_MS = 1000;
const MODEL = 'spam-mlp';

const log = (msg: string): void => void process.stderr.write(`[bench:rollout ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const CONFIGS = {
  neither: { rollout: { shadow: null }, capture: { percent: 0 } },
  'shadow 10% + capture 10%': { rollout: { shadow: { version: '2', percent: 10 } }, capture: { percent: 10 } },
} as const;
type ConfigName = keyof typeof CONFIGS;

/** A repository holding spam-mlp twice: version 2 is version 1's graph, pinned stable 1. */
function repository(dir: string): string {
  const root = join(dir, 'models');
  const src = join(ROOT, 'models', MODEL);
  for (const v of ['1', '2']) {
    mkdirSync(join(root, MODEL, v), { recursive: true });
    copyFileSync(join(src, '1', 'model.onnx'), join(root, MODEL, v, 'model.onnx'));
  }
  const config = parse(readFileSync(join(src, 'config.yaml'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(root, MODEL, 'config.yaml'), stringify({ ...config, rollout: { stable: '1' } }));
  return root;
}

async function gql(url: string, query: string, variables: Record<string, unknown>): Promise<void> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { errors?: unknown[] };
  if (body.errors) throw new Error(`${query}: ${JSON.stringify(body.errors)}`);
}

async function configure(url: string, name: ConfigName): Promise<void> {
  const c = CONFIGS[name];
  await gql(url, 'mutation($m: String!, $p: RolloutInput!) { setRollout(model: $m, policy: $p) { revision } }', { m: MODEL, p: c.rollout });
  await gql(url, 'mutation($m: String!, $c: CaptureInput!) { setCapture(model: $m, capture: $c) { revision } }', {
    m: MODEL,
    c: c.capture,
  });
}

interface Run {
  config: ConfigName;
  requests: number;
  requestsPerSec: number;
  p50: number;
  errors: number;
  /** CPU ms per request by process, and in all. */
  cpuMsPerRequest: Record<string, number>;
  /** Shadow runs and captures written, per request. */
  mirroredPerRequest: number;
  capturedPerRequest: number;
}

async function main(): Promise<void> {
  const dir = benchDir();
  const redis = await startRedis(dir);
  const port = await freePort();
  const env = {
    BATCHLINE_REDIS_URL: redis.url,
    BATCHLINE_REDIS_PREFIX: 'bench-rollout',
    BATCHLINE_MODELS: repository(dir),
    BATCHLINE_PORT: String(port),
    BATCHLINE_HOST: '127.0.0.1',
    NODE_ENV: 'production',
  };
  const procs: Proc[] = [
    await startCli('worker-cpu', ['worker', '--pool', 'cpu'], env, dir, /"msg":"worker started"/),
    await startCli('api', ['serve'], env, dir, /"msg":"API listening"/),
  ];
  const url = `http://127.0.0.1:${port}/graphql`;
  const metricsUrl = `http://127.0.0.1:${port}/metrics`;
  const spam = scenarios().find((s): s is HttpScenario => s.kind === 'http' && s.id === 'spam-b64-16')!;
  const pids: Record<string, number> = { api: procs[1].pid, worker: procs[0].pid, redis: redis.pid };
  const runs: Run[] = [];
  try {
    // Warm up both versions and the path once.
    await configure(url, 'shadow 10% + capture 10%');
    await runWrk({ url, bodies: spam.bodies, connections: CONNECTIONS, seconds: 2, dir, name: 'warm-up' });
    for (let round = 0; round < ROUNDS; round++) {
      const order = Object.keys(CONFIGS) as ConfigName[];
      for (const config of round % 2 ? order.reverse() : order) {
        await configure(url, config);
        await sleep(SETTLE_MS);
        const cpu0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMsOf(pid)]));
        const m0 = await scrape(metricsUrl);
        const w = await runWrk({ url, bodies: spam.bodies, connections: CONNECTIONS, seconds: SECONDS, dir, name: `${round}` });
        await sleep(SETTLE_MS);
        const cpu1 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMsOf(pid)]));
        const m1 = await scrape(metricsUrl);
        const delta = (name: string, match: Record<string, string>): number => metricSum(m1, name, match) - metricSum(m0, name, match);
        const perRequest = Object.fromEntries(Object.keys(pids).map((k) => [k, (cpu1[k] - cpu0[k]) / w.requests]));
        perRequest.all = Object.values(perRequest).reduce((a, b) => a + b, 0);
        const run: Run = {
          config,
          requests: w.requests,
          requestsPerSec: w.requestsPerSec,
          p50: w.p50,
          errors:
            w.non2xx +
            w.socketErrors +
            delta('batchline_requests_total', { model: MODEL }) -
            delta('batchline_requests_total', { model: MODEL, outcome: 'ok' }),
          cpuMsPerRequest: perRequest,
          mirroredPerRequest: delta('batchline_rollout_mirrored_total', { model: MODEL }) / w.requests,
          capturedPerRequest: delta('batchline_capture_total', { model: MODEL, outcome: 'written' }) / w.requests,
        };
        runs.push(run);
        log(
          `round ${round + 1}/${ROUNDS} ${config}: ${run.requestsPerSec.toFixed(0)} req/s, ${run.cpuMsPerRequest.all.toFixed(3)} CPU ms/req, mirrored ${(run.mirroredPerRequest * 100).toFixed(1)}%, captured ${(run.capturedPerRequest * 100).toFixed(1)}%`,
        );
      }
    }
  } finally {
    for (const p of [...procs].reverse()) await p.stop();
    await redis.stop();
  }
  const of = (config: ConfigName): Run[] => runs.filter((r) => r.config === config);
  const summary = Object.fromEntries(
    (Object.keys(CONFIGS) as ConfigName[]).map((c) => [
      c,
      {
        requestsPerSec: median(of(c).map((r) => r.requestsPerSec)),
        p50Ms: median(of(c).map((r) => r.p50)),
        errors: of(c).reduce((a, r) => a + r.errors, 0),
        cpuMsPerRequest: Object.fromEntries(
          ['api', 'worker', 'redis', 'all'].map((k) => [k, median(of(c).map((r) => r.cpuMsPerRequest[k]))]),
        ),
        mirroredPerRequest: median(of(c).map((r) => r.mirroredPerRequest)),
        capturedPerRequest: median(of(c).map((r) => r.capturedPerRequest)),
      },
    ]),
  );
  // Ratios within a round, so a drift of the shared machine falls on both sides alike.
  const ratios = Array.from({ length: ROUNDS }, (_, i) => {
    const [a, b] = [of('shadow 10% + capture 10%')[i], of('neither')[i]];
    return a.cpuMsPerRequest.all / b.cpuMsPerRequest.all;
  });
  console.log(
    JSON.stringify(
      { seconds: SECONDS, rounds: ROUNDS, connections: CONNECTIONS, summary, cpuPerRequestRatio: { median: median(ratios), runs: ratios } },
      null,
      2,
    ),
  );
}

await main();
process.exit(0);
