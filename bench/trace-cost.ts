/**
 * `npm run bench:trace`: what tracing costs a synchronous request, measured against its own
 * baseline in the same run. Four stacks start side by side, the way `npm start` starts one
 * (`cli/main.ts serve` and `worker --pool cpu`, NODE_ENV=production, logs to files), on one
 * private redis-server: tracing off, on at sampling ratio 1.0, and on at 0.01, the last two
 * exporting OTLP (http/protobuf, the default) to a sink in this process that answers as a
 * collector does; and a fourth stack with tracing off again, whose ratio to the first is the
 * noise floor the other ratios must clear. Rounds visit the three in turn (every other round in reverse order), so a
 * drift of the shared machine falls on all three alike.
 *
 * Each run offers one stack the same open-loop load (bench/load-client.ts: synchronous
 * spam-mlp predicts at a constant rate, random rows of JSON features): under a closed loop a slower
 * configuration would batch differently (other requests in flight, other jobs per request),
 * and its CPU per request would measure the batching as much as the tracing.
 *
 * Per run: requests/s answered, p50/p99 (from the scheduled send), errors, and CPU ms per
 * request of the API and the worker (from /proc). Ratios: each round's CPU per request (API +
 * worker) with tracing on over the same round's with it off; medians over rounds, with the range.
 *
 * Env: BENCH_SECONDS (per run, default 10), BENCH_ROUNDS (default 5), BENCH_RATE (requests/s,
 * default 200, which the shared 2-core machine holds with room to spare).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import type { LoadSpec } from './load-client.ts';
import { benchDir, cpuMsOf, freePort, machineCpuMs, ROOT, runLoadClients, startCli, startRedis, type Proc } from './processes.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5));
const RATE = Number(process.env.BENCH_RATE ?? 200);
const SETTLE_MS = 500;

const log = (msg: string): void => void process.stderr.write(`[bench:trace ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Config {
  id: 'off' | 'off-again' | 'on-1.0' | 'on-0.01';
  env: Record<string, string>;
}

interface Stack {
  config: Config;
  url: string;
  procs: { api: Proc; worker: Proc };
}

interface Run {
  round: number;
  requests: number;
  requestsPerSec: number;
  p50: number;
  p99: number;
  errors: number;
  cpuMsPerRequest: { api: number; worker: number; both: number };
  otherCpuPct: number;
}

/** An OTLP/HTTP endpoint that takes everything and answers 200, counting what came. */
async function startSink(): Promise<{ endpoint: string; requests: () => number; bytes: () => number; close(): Promise<void> }> {
  let requests = 0;
  let bytes = 0;
  const server = createServer((req, res) => {
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', () => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => requests,
    bytes: () => bytes,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function startStack(config: Config, redisUrl: string, dir: string, n: number): Promise<Stack> {
  const port = await freePort();
  const env = {
    BATCHLINE_REDIS_URL: redisUrl,
    BATCHLINE_REDIS_PREFIX: `bench-trace-${n}`,
    BATCHLINE_MODELS: join(ROOT, 'models'),
    BATCHLINE_PORT: String(port),
    BATCHLINE_HOST: '127.0.0.1',
    BATCHLINE_MAINTENANCE: 'false',
    NODE_ENV: 'production',
    ...config.env,
  };
  const worker = await startCli(`worker-${config.id}`, ['worker', '--pool', 'cpu'], env, dir, /"msg":"worker started"/);
  const api = await startCli(`api-${config.id}`, ['serve'], env, dir, /"msg":"API listening"/);
  return { config, url: `http://127.0.0.1:${port}/graphql`, procs: { api, worker } };
}

/** Synchronous spam-mlp predicts, one row of 64 random JSON features each, at RATE a second for `seconds`. */
function load(stack: Stack, seconds: number): LoadSpec {
  return {
    url: stack.url,
    ws: stack.url.replace('http', 'ws'),
    model: 'spam-mlp',
    rowWidth: 64,
    rowsPerRequest: 1,
    // JSON features: the load client names its base64 tensor 'input', spam-mlp's is 'features'.
    encoding: 'json',
    transport: 'http',
    loop: 'open',
    concurrency: 0,
    rate: RATE,
    durationMs: seconds * 1000,
    maxInFlight: 256,
  };
}

async function measure(stack: Stack, round: number): Promise<Run> {
  await sleep(SETTLE_MS);
  const cpu = (): { api: number; worker: number } => ({ api: cpuMsOf(stack.procs.api.pid), worker: cpuMsOf(stack.procs.worker.pid) });
  const [cpu0, machine0] = [cpu(), machineCpuMs()];
  const [r] = await runLoadClients([load(stack, SECONDS)]);
  await sleep(SETTLE_MS);
  const [cpu1, machine1] = [cpu(), machineCpuMs()];
  const answered = r.latencies.length;
  const per = (v: number): number => v / Math.max(1, answered);
  const api = per(cpu1.api - cpu0.api);
  const worker = per(cpu1.worker - cpu0.worker);
  const ours = cpu1.api - cpu0.api + (cpu1.worker - cpu0.worker) + r.cpuMs;
  const lat = [...r.latencies].sort((x, y) => x - y);
  const at = (q: number): number => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] ?? NaN;
  return {
    round,
    requests: answered,
    requestsPerSec: answered / (r.elapsedMs / 1000),
    p50: at(0.5),
    p99: at(0.99),
    errors: r.errors + r.dropped,
    cpuMsPerRequest: { api, worker, both: api + worker },
    otherCpuPct: (100 * (machine1.busy - machine0.busy - ours)) / (machine1.total - machine0.total),
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (n: number, d = 0): string => (Number.isFinite(n) ? n.toFixed(d) : '-');
const span = (xs: number[], d: number): string => `${fmt(Math.min(...xs), d)}-${fmt(Math.max(...xs), d)}`;

async function main(): Promise<void> {
  const dir = benchDir();
  log(
    `machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown'}), node ${process.version}; ${ROUNDS} rounds x 4 stacks x ${SECONDS} s at ${RATE} requests/s; logs in ${dir}`,
  );
  const sink = await startSink();
  const tracing = (ratio: string): Record<string, string> => ({
    BATCHLINE_TRACING: 'true',
    BATCHLINE_TRACING_SAMPLING_RATIO: ratio,
    OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint,
  });
  const configs: Config[] = [
    { id: 'off', env: {} },
    { id: 'on-1.0', env: tracing('1') },
    { id: 'on-0.01', env: tracing('0.01') },
    // A second stack exactly like the first: its ratio to 'off' is this machine's noise floor,
    // the smallest difference between the others that means anything.
    { id: 'off-again', env: {} },
  ];
  const redis = await startRedis(dir);
  const stacks: Stack[] = [];
  const runs = new Map<Config['id'], Run[]>(configs.map((c) => [c.id, []]));
  try {
    for (const [i, c] of configs.entries()) stacks.push(await startStack(c, redis.url, dir, i));
    // A few seconds of each first: JIT, connections, the first batches.
    for (const s of stacks) await runLoadClients([load(s, 2)]);
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of round % 2 === 0 ? stacks : [...stacks].reverse()) {
        const r = await measure(s, round);
        runs.get(s.config.id)!.push(r);
        log(
          `round ${round + 1} ${s.config.id}: ${fmt(r.requestsPerSec)} req/s, p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms, errors ${r.errors}, CPU ms/req api ${fmt(r.cpuMsPerRequest.api, 3)} worker ${fmt(r.cpuMsPerRequest.worker, 3)}, other CPU ${fmt(r.otherCpuPct)}%`,
        );
      }
    }
  } finally {
    for (const s of stacks) {
      await s.procs.api.stop();
      await s.procs.worker.stop();
    }
    await redis.stop();
    await sink.close();
  }
  const lines = [
    `\nspam-mlp predict (one row, JSON features), open loop at ${RATE} requests/s; ${ROUNDS} rounds of ${SECONDS} s per stack, medians (lowest-highest).`,
    `\n| tracing | requests/s | p50 ms | p99 ms | errors | CPU ms/request: API / worker / both | other CPU % |`,
    '|---|---|---|---|---|---|---|',
  ];
  for (const c of configs) {
    const rs = runs.get(c.id)!;
    const m = (f: (r: Run) => number, d: number): string => `${fmt(median(rs.map(f)), d)} (${span(rs.map(f), d)})`;
    lines.push(
      `| ${c.id} | ${m((r) => r.requestsPerSec, 0)} | ${m((r) => r.p50, 1)} | ${fmt(median(rs.map((r) => r.p99)), 1)} | ${rs.reduce((a, r) => a + r.errors, 0)} | ${fmt(median(rs.map((r) => r.cpuMsPerRequest.api)), 3)} / ${fmt(median(rs.map((r) => r.cpuMsPerRequest.worker)), 3)} / ${m((r) => r.cpuMsPerRequest.both, 3)} | ${fmt(median(rs.map((r) => r.otherCpuPct)))} |`,
    );
  }
  const off = runs.get('off')!;
  const ratio = (id: Config['id']): number[] =>
    runs.get(id)!.map((r) => r.cpuMsPerRequest.both / off.find((o) => o.round === r.round)!.cpuMsPerRequest.both);
  lines.push(`\nCPU per request (API + worker) over tracing off, each round's own ratio, median (range):`);
  lines.push(`- on at 1.0: ${fmt(median(ratio('on-1.0')), 3)} (${span(ratio('on-1.0'), 3)}); target <= 1.10`);
  lines.push(`- on at 0.01: ${fmt(median(ratio('on-0.01')), 3)} (${span(ratio('on-0.01'), 3)}); target <= 1.02`);
  lines.push(
    `- off again (a second stack like the first, the noise floor): ${fmt(median(ratio('off-again')), 3)} (${span(ratio('off-again'), 3)})`,
  );
  lines.push(`\nThe sink received ${sink.requests()} OTLP exports, ${fmt(sink.bytes() / 1024)} KiB.`);
  console.log(lines.join('\n'));
}

await main();
process.exit(0);
