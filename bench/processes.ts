/**
 * The processes a benchmark measures, and what /proc and Redis say they spent. Unlike
 * harness/ (whose children write to pipes), their output goes to files: see startLogged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { freePort, redisServerArgs } from '../cli/local-redis.ts';
import type { LoadResult, LoadSpec } from './load-client.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'cli', 'main.ts');

export { freePort } from '../cli/local-redis.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface Proc {
  name: string;
  pid: number;
  /** Where its stdout and stderr go. */
  logFile: string;
  stop(): Promise<void>;
}

/**
 * Starts a process with its output in a file, not a pipe: a pipe would make the bench
 * process read every log line (the API logs one per request by default) on the cores it
 * is measuring, and hold them all in memory.
 */
function startLogged(
  name: string,
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  dir: string,
): { proc: ChildProcess; logFile: string } {
  // A file of its own per start: a restarted process must not find its predecessor's ready line.
  let logFile = join(dir, `${name}.log`);
  for (let i = 2; existsSync(logFile); i++) logFile = join(dir, `${name}-${i}.log`);
  const fd = openSync(logFile, 'w');
  const proc = spawn(command, args, { env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  return { proc, logFile };
}

function stopper(proc: ChildProcess, timeoutMs = 20_000): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      const kill = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
      proc.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      proc.kill('SIGTERM');
    });
}

/** Waits until `ready` appears in the process's log; throws with the log if it exits first. */
async function waitForLine(name: string, proc: ChildProcess, logFile: string, ready: RegExp, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const out = readFileSync(logFile, 'utf8');
    if (ready.test(out)) return;
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}) before ${ready}:\n${out.slice(-3000)}`);
    if (Date.now() > end) throw new Error(`${name} not ready in ${timeoutMs} ms:\n${out.slice(-3000)}`);
    await sleep(50);
  }
}

export interface PrivateRedis extends Proc {
  url: string;
}

/** A redis-server of our own on a free port, configured as BullMQ needs it (noeviction), nothing persisted. */
export async function startRedis(dir: string): Promise<PrivateRedis> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const { proc, logFile } = startLogged(
    'redis',
    'redis-server',
    redisServerArgs({ port, dir: mkdtempSync(join(dir, 'redis-')), appendonly: false }),
    process.env,
    dir,
  );
  await waitForLine('redis-server', proc, logFile, /Ready to accept connections/);
  return { name: 'redis', pid: proc.pid!, logFile, url, stop: stopper(proc) };
}

/**
 * `cli/main.ts <args>` (as `npm start` runs each of its processes), ready once `ready` is logged.
 * gRPC is off unless `env` sets `BATCHLINE_GRPC_PORT`: benches start several APIs side by side,
 * and every one would otherwise bind the default 4001. `root`: another checkout's cli/main.ts (a
 * baseline measured in the same run).
 */
export async function startCli(
  name: string,
  args: string[],
  env: Record<string, string>,
  dir: string,
  ready: RegExp,
  root?: string,
): Promise<Proc> {
  const cli = root ? join(root, 'cli', 'main.ts') : CLI;
  const { proc, logFile } = startLogged(name, process.execPath, [cli, ...args], { ...process.env, BATCHLINE_GRPC_PORT: '0', ...env }, dir);
  const stop = stopper(proc);
  try {
    await waitForLine(name, proc, logFile, ready);
  } catch (e) {
    await stop();
    throw e;
  }
  return { name, pid: proc.pid!, logFile, stop };
}

export const benchDir = (): string => mkdtempSync(join(tmpdir(), 'batchline-bench-path-'));

/** /proc/<pid>/stat counts in clock ticks: 100 a second on Linux. */
const CLOCK_TICKS = 100;

/** CPU time (user + system) of every thread of a process so far, in ms, from a /proc/<pid>/stat line; NaN where unreadable. */
export function cpuMsOfStat(stat: string | undefined): number {
  if (!stat) return NaN;
  // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}

export function cpuMsOf(pid: number | undefined): number {
  try {
    return cpuMsOfStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return NaN;
  }
}

/** Machine-wide CPU ms so far (all cores): busy, stolen by the hypervisor, and all of it. */
export function machineCpuMs(): { busy: number; steal: number; total: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already inside user and nice)
    const ms = (t: number): number => (t * 1000) / CLOCK_TICKS;
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: ms(total - f[3] - f[4] - f[7]), steal: ms(f[7]), total: ms(total) };
  } catch {
    return { busy: NaN, steal: NaN, total: NaN };
  }
}

export interface RedisWork {
  /** Calls by command (`INFO commandstats`, `info` itself left out: that is the bench asking). */
  calls: Record<string, number>;
  /** Microseconds Redis spent executing them. */
  usec: number;
  netInputBytes: number;
  netOutputBytes: number;
}

/** What Redis has done so far; two of these subtracted give a scenario's Redis work. */
export async function redisWork(redis: Redis): Promise<RedisWork> {
  const [commandstats, stats] = await Promise.all([redis.info('commandstats'), redis.info('stats')]);
  const calls: Record<string, number> = {};
  let usec = 0;
  for (const m of commandstats.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    if (m[1] === 'info') continue;
    calls[m[1]] = Number(m[2]);
    usec += Number(m[3]);
  }
  const stat = (k: string): number => Number(new RegExp(`^${k}:(\\d+)`, 'm').exec(stats)?.[1] ?? NaN);
  return { calls, usec, netInputBytes: stat('total_net_input_bytes'), netOutputBytes: stat('total_net_output_bytes') };
}

export function redisWorkBetween(a: RedisWork, b: RedisWork): RedisWork {
  const calls: Record<string, number> = {};
  for (const [k, v] of Object.entries(b.calls)) if (v - (a.calls[k] ?? 0) > 0) calls[k] = v - (a.calls[k] ?? 0);
  return {
    calls,
    usec: b.usec - a.usec,
    netInputBytes: b.netInputBytes - a.netInputBytes,
    netOutputBytes: b.netOutputBytes - a.netOutputBytes,
  };
}

/** Runs bench/load-client.ts once per spec, each in a process of its own, and collects their results. */
export function runLoadClients(specs: LoadSpec[]): Promise<LoadResult[]> {
  return Promise.all(
    specs.map(
      (spec) =>
        new Promise<LoadResult>((resolve, reject) => {
          const child = spawn(process.execPath, [join(ROOT, 'bench', 'load-client.ts'), JSON.stringify(spec)], {
            stdio: ['ignore', 'pipe', 'inherit'],
          });
          let out = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.on('exit', (code) =>
            code === 0 ? resolve(JSON.parse(out) as LoadResult) : reject(new Error(`load client exited ${code}`)),
          );
        }),
    ),
  );
}
