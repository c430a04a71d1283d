/**
 * gRPC load from h2load (Debian's `nghttp2-client`), a process of its own, as wrk is for HTTP:
 * unary calls of one prepared gRPC message (a length-prefixed protobuf frame) on N HTTP/2
 * connections, one call in flight on each (closed loop), 2 threads. A native client, so the
 * load costs the shared cores about what wrk's does, not what a Node gRPC client's would
 * (@grpc/grpc-js spent more CPU per call than the API serving it). h2load sees HTTP statuses
 * only, not gRPC's (a gRPC error is a 200 with a `grpc-status` trailer): bench/path.ts samples
 * an answer with @grpc/grpc-js first and counts the API's non-ok outcomes. Latency percentiles
 * come from h2load's per-request log; its CPU from the shell that waited for it (cutime).
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface H2loadRun {
  requests: number;
  requestsPerSec: number;
  p50: number;
  p99: number;
  /** Answers with an HTTP status outside 2xx, and requests that failed or errored at the transport. */
  non2xx: number;
  socketErrors: number;
  cpuMs: number;
}

const CLOCK_TICKS = 100;

/** A gRPC message as it goes on the wire: not compressed (0), its length (big-endian), its bytes. */
export function grpcFrame(message: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

export async function runH2load(opts: {
  /** `http://host:port/package.Service/Method` */
  url: string;
  frame: Buffer;
  /** Extra request headers (`x-api-key: ...`). */
  headers?: string[];
  connections: number;
  seconds: number;
  dir: string;
  name: string;
}): Promise<H2loadRun> {
  const data = join(opts.dir, `${opts.name}.grpc`);
  const log = join(opts.dir, `${opts.name}.h2load.log`);
  writeFileSync(data, opts.frame);
  writeFileSync(log, '');
  const args = [
    '-t',
    '2',
    '-c',
    String(opts.connections),
    '-m',
    '1',
    '-D',
    String(opts.seconds),
    '-d',
    data,
    '-H',
    'content-type: application/grpc',
    '-H',
    'te: trailers',
    ...(opts.headers ?? []).flatMap((h) => ['-H', h]),
    `--log-file=${log}`,
    opts.url,
  ];
  // The shell waits for h2load, then prints its own stat, whose cutime / cstime are h2load's CPU.
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('sh', ['-c', 'h2load "$@"; s=$?; echo "H2_STAT $(cat /proc/$$/stat)"; exit $s', 'sh', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.stderr.on('data', (d: Buffer) => (text += d.toString()));
    child.once('close', (code) =>
      code === 0 ? resolve(text) : reject(new Error(`h2load exited ${code} (apt-get install -y nghttp2-client):\n${text}`)),
    );
  });
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  if (!m) throw new Error(`no requests line from h2load:\n${out}`);
  const [, , , done, , , errored, timeout] = m.map(Number);
  const status = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out)?.slice(1).map(Number) ?? [0, 0, 0, 0];
  const durations = readFileSync(log, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => Number(l.split('\t')[2]) / 1000)
    .sort((a, b) => a - b);
  const at = (q: number): number => durations[Math.min(durations.length - 1, Math.floor(q * durations.length))] ?? NaN;
  const stat = /^H2_STAT (.*)$/m.exec(out)?.[1] ?? '';
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return {
    requests: done,
    requestsPerSec: done / opts.seconds,
    p50: at(0.5),
    p99: at(0.99),
    non2xx: status[1] + status[2] + status[3],
    socketErrors: errored + timeout,
    cpuMs: ((Number(fields[13]) + Number(fields[14])) * 1000) / CLOCK_TICKS,
  };
}
