/**
 * `npm run bench:trace-profile [-- <ratio|off>]`: where tracing's CPU goes in the API, by
 * profile rather than by end-to-end CPU ratios (bench:trace), whose round-to-round spread on a
 * shared machine is wider than the few percent tracing costs. Starts a private redis-server, a
 * cpu worker and `serve` under `--cpu-prof` with tracing at the given sampling ratio (default
 * 0.01; `off` for none; spans go to a closed port, so exporting fails at once, as with a
 * collector that is down), offers 200 synchronous spam-mlp predicts a second for 15 s after 3 s
 * of warm-up, stops the API (which writes the profile) and prints the profile's self time by
 * package: OpenTelemetry's packages and core/telemetry's files apart, per request and as a
 * share of the API's busy time.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchDir, freePort, ROOT, runLoadClients, startCli, startRedis } from './processes.ts';

const ratio = process.argv[2] ?? '0.01';
const RATE = 200;
const SECONDS = 15;

interface ProfileNode {
  id: number;
  callFrame: { url: string; functionName: string };
}

/** Self time (µs) by bucket: OpenTelemetry package, core/telemetry file, another package, or the rest. */
function selfTimeByBucket(file: string): Map<string, number> {
  const p = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const out = new Map<string, number>();
  p.samples.forEach((id, i) => {
    const { url, functionName } = byId.get(id)!.callFrame;
    const bucket = url.includes('@opentelemetry/')
      ? `opentelemetry: ${url.split('@opentelemetry/')[1].split('/')[0]}`
      : url.includes('/core/telemetry/')
        ? `core/telemetry: ${url.split('/core/telemetry/')[1]}`
        : url.includes('node_modules/')
          ? 'other packages'
          : url === ''
            ? `(${functionName})`
            : 'the rest';
    out.set(bucket, (out.get(bucket) ?? 0) + (p.timeDeltas[i] ?? 0));
  });
  return out;
}

const dir = benchDir();
const profiles = mkdtempSync(join(tmpdir(), 'batchline-trace-profile-'));
const redis = await startRedis(dir);
const port = await freePort();
const env: Record<string, string> = {
  BATCHLINE_REDIS_URL: redis.url,
  BATCHLINE_REDIS_PREFIX: 'trace-profile',
  BATCHLINE_MODELS: join(ROOT, 'models'),
  BATCHLINE_PORT: String(port),
  BATCHLINE_HOST: '127.0.0.1',
  BATCHLINE_MAINTENANCE: 'false',
  NODE_ENV: 'production',
  ...(ratio === 'off'
    ? {}
    : { BATCHLINE_TRACING: 'true', BATCHLINE_TRACING_SAMPLING_RATIO: ratio, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' }),
};
const worker = await startCli('worker', ['worker', '--pool', 'cpu'], env, dir, /"msg":"worker started"/);
const api = await startCli(
  'api',
  ['serve'],
  { ...env, NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profiles}` },
  dir,
  /"msg":"API listening"/,
);
const url = `http://127.0.0.1:${port}/graphql`;
const spec = {
  url,
  ws: url.replace('http', 'ws'),
  model: 'spam-mlp',
  rowWidth: 64,
  rowsPerRequest: 1,
  encoding: 'json' as const,
  transport: 'http' as const,
  loop: 'open' as const,
  concurrency: 0,
  rate: RATE,
  durationMs: SECONDS * 1000,
  maxInFlight: 256,
};
const [warm] = await runLoadClients([{ ...spec, durationMs: 3000 }]);
const [r] = await runLoadClients([spec]);
await api.stop();
await worker.stop();
await redis.stop();

const requests = warm.latencies.length + r.latencies.length;
const file = readdirSync(profiles).find((f) => f.endsWith('.cpuprofile'));
if (!file) throw new Error(`the API wrote no profile in ${profiles}`);
const buckets = selfTimeByBucket(join(profiles, file));
const busy = [...buckets].filter(([k]) => k !== '((idle))').reduce((a, [, v]) => a + v, 0);
const tracing = [...buckets].filter(([k]) => k.startsWith('opentelemetry') || k.startsWith('core/telemetry: trac'));
const tracingUs = tracing.reduce((a, [, v]) => a + v, 0);
console.log(
  `tracing ${ratio}: ${requests} requests (${r.errors} errors), API busy ${(busy / 1000).toFixed(0)} ms = ${(busy / 1000 / requests).toFixed(3)} ms/request`,
);
for (const [k, v] of [...buckets]
  .filter(([k]) => k.startsWith('opentelemetry') || k.startsWith('core/telemetry'))
  .sort((a, b) => b[1] - a[1]))
  console.log(`  ${k.padEnd(40)} ${(v / 1000).toFixed(1)} ms`);
console.log(
  `OpenTelemetry and core/telemetry/trace*.ts self time: ${(tracingUs / 1000 / requests).toFixed(4)} ms/request, ${((100 * tracingUs) / busy).toFixed(1)}% of the API's busy time`,
);
process.exit(0);
