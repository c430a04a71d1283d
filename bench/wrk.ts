/**
 * HTTP load from wrk (Debian's `wrk` package), a process of its own: POSTs that rotate among
 * a few prepared GraphQL bodies, closed loop on N kept-alive connections. A Lua script
 * prepares the requests once per thread, so wrk's per-request cost stays the same for every
 * scenario, and reports its results and its own CPU time (/proc/self/stat, every thread) as
 * it finishes.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cpuMsOfStat } from './processes.ts';

export interface WrkRun {
  requests: number;
  durationMs: number;
  requestsPerSec: number;
  /** Latency percentiles, ms. */
  p50: number;
  p90: number;
  p99: number;
  /** Answers with a status outside 200-399. */
  non2xx: number;
  /** Socket errors and timeouts. */
  socketErrors: number;
  /** CPU wrk spent (user + system, all threads), ms. */
  cpuMs: number;
}

const LONG_OPEN = '[==[';
const LONG_CLOSE = ']==]';

/** A Lua string literal of any bytes: printable ASCII as is, the rest as decimal escapes (long brackets would turn CR LF into LF). */
function luaBytes(b: Buffer): string {
  let out = '"';
  for (const c of b) out += c >= 0x20 && c < 0x7f && c !== 0x22 && c !== 0x5c ? String.fromCharCode(c) : `\\${String(c).padStart(3, '0')}`;
  return `${out}"`;
}

function luaString(s: string): string {
  if (s.includes(LONG_CLOSE)) throw new Error(`a body holds ${LONG_CLOSE}`);
  return `${LONG_OPEN}${s}${LONG_CLOSE}`;
}

function script(bodies: (string | Buffer)[], headers: Record<string, string>): string {
  const head = Object.entries(headers)
    .map(([k, v]) => `["${k}"] = ${luaString(v)}`)
    .join(', ');
  return `-- Written by bench/wrk.ts for one benchmark scenario.
local bodies = {
${bodies.map((b) => `  ${typeof b === 'string' ? luaString(b) : luaBytes(b)},`).join('\n')}
}
local prepared = {}
local n = 0

function init(args)
  for i, body in ipairs(bodies) do
    prepared[i] = wrk.format("POST", nil, { ${head} }, body)
  end
end

function request()
  n = n % #prepared + 1
  return prepared[n]
end

function done(summary, latency, _)
  local f = io.open("/proc/self/stat", "r")
  local stat = f and f:read("*l") or ""
  if f then f:close() end
  local e = summary.errors
  io.write(string.format("WRK_RESULT %d %d %d %d %d %d %d %.1f %.1f %.1f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
  io.write("WRK_STAT " .. stat .. "\\n")
end
`;
}

/** Runs wrk against `url` for `seconds` on `connections` connections (2 threads), rotating `bodies`. */
export async function runWrk(opts: {
  url: string;
  /** Text (GraphQL, JSON) or bytes (the inference protocol's binary tensor data). */
  bodies: (string | Buffer)[];
  /** Request headers; JSON's by default. */
  headers?: Record<string, string>;
  connections: number;
  seconds: number;
  dir: string;
  name: string;
}): Promise<WrkRun> {
  const file = join(opts.dir, `${opts.name}.lua`);
  writeFileSync(file, script(opts.bodies, opts.headers ?? { 'Content-Type': 'application/json', Accept: 'application/json' }));
  const args = ['-t', '2', '-c', String(opts.connections), '-d', `${opts.seconds}s`, '--timeout', '10s', '--latency', '-s', file, opts.url];
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.stderr.on('data', (d: Buffer) => (text += d.toString()));
    child.once('error', (e) => reject(new Error(`wrk did not start (${e.message}); install it: apt-get install -y wrk`)));
    child.once('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`wrk exited ${code}:\n${text}`))));
  });
  const r = /^WRK_RESULT (.*)$/m.exec(out)?.[1].split(' ').map(Number);
  if (!r) throw new Error(`no WRK_RESULT line from wrk:\n${out}`);
  const [requests, durationUs, connect, read, write, status, timeout, p50, p90, p99] = r;
  return {
    requests,
    durationMs: durationUs / 1000,
    requestsPerSec: requests / (durationUs / 1e6),
    p50: p50 / 1000,
    p90: p90 / 1000,
    p99: p99 / 1000,
    non2xx: status,
    socketErrors: connect + read + write + timeout,
    cpuMs: cpuMsOfStat(/^WRK_STAT (.*)$/m.exec(out)?.[1]),
  };
}
