/**
 * The Redis of `batchline start`, the local all-in-one command: the configured one when it
 * answers; otherwise, when no Redis URL was configured at all, a private redis-server from
 * PATH that lives and stops with the stack. `serve` and `worker` never start one: in a
 * cluster Redis is a service of its own, and an explicitly configured Redis that does not
 * answer is waited for, never replaced.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { Redis } from 'ioredis';
import { parse } from 'yaml';

/** Data of the private redis-server, under the folder `start` runs in (the project root for `npm start`). */
export const LOCAL_REDIS_DIR = '.batchline/redis';
/** How long a stopping redis-server gets to write its AOF before SIGKILL. */
export const REDIS_STOP_MS = 5000;

/** What to run where redis-server is missing. */
export function installRedis(url: string): string {
  return `No Redis answers at ${url}, and redis-server is not on PATH to start a private one.
Install it, or run one, then run this again:
  Debian/Ubuntu:  sudo apt-get install redis-server
  macOS:          brew install redis
  Docker:         docker run -p 6379:6379 redis:7
Or point batchline at a Redis of yours: BATCHLINE_REDIS_URL=redis://HOST:PORT (or --redis URL).`;
}

/**
 * Whether the Redis URL was set by hand: the --redis flag, BATCHLINE_REDIS_URL (non-empty,
 * as config.ts reads it) or `redis.url` in the config file. Only an unset URL may be served
 * by a private Redis, even where a set one equals the default.
 */
export function redisUrlConfigured(flag: string | undefined, file: string | undefined, env: NodeJS.ProcessEnv): boolean {
  if (flag !== undefined || env.BATCHLINE_REDIS_URL) return true;
  const path = file ?? env.BATCHLINE_CONFIG;
  if (!path) return false;
  const parsed = parse(readFileSync(path, 'utf8')) as { redis?: { url?: unknown } } | null;
  return parsed?.redis?.url !== undefined;
}

/**
 * The port of the default local Redis, 6379. BATCHLINE_LOCAL_REDIS_PORT moves it: for tests,
 * which must not touch the machine's Redis, and for machines where 6379 is something else.
 */
export function localRedisPort(env: NodeJS.ProcessEnv): number {
  const port = Number(env.BATCHLINE_LOCAL_REDIS_PORT || 6379);
  if (!Number.isInteger(port) || port <= 0 || port > 65535)
    throw new Error(`BATCHLINE_LOCAL_REDIS_PORT must be a port number, got ${env.BATCHLINE_LOCAL_REDIS_PORT}`);
  return port;
}

/** Whether a Redis answers PING at `url` within `timeoutMs`; one try, no reconnects. */
export async function redisAnswers(url: string, timeoutMs = 1000): Promise<boolean> {
  const r = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  r.on('error', () => {});
  try {
    await r.connect();
    return (await r.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

/** Whether nothing listens on `port` of 127.0.0.1 now. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const srv = createServer();
    srv.once('error', () => done(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => done(true)));
  });
}

/** A port on 127.0.0.1 that nothing listens on now (the OS picks it); tests and the bench use it too. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((done) => srv.listen(0, '127.0.0.1', done));
  const { port } = srv.address() as { port: number };
  await new Promise((done) => srv.close(done));
  return port;
}

export interface LocalRedis {
  url: string;
  /** True when this start found it left running by an earlier start instead of starting it. */
  reused: boolean;
  /** Resolves when the server stops by itself (crashed, killed), not when stop() stops it. */
  exited: Promise<void>;
  /** SIGTERM (it writes its AOF), SIGKILL after REDIS_STOP_MS; false when it had to be killed. */
  stop(): Promise<boolean>;
}

/**
 * The Redis `start` runs on when no Redis URL is configured: a private one an earlier start
 * left running (it was SIGKILLed), else one answering at the default local address, else a
 * private redis-server started now. `local` is set when the stack owns it and stops it.
 */
export async function localRedisFor(env: NodeJS.ProcessEnv, cwd = process.cwd()): Promise<{ url: string; local?: LocalRedis }> {
  const dir = resolve(cwd, LOCAL_REDIS_DIR);
  const urlFile = resolve(dir, 'url');
  const left = existsSync(urlFile) ? readFileSync(urlFile, 'utf8').trim() : '';
  if (left && (await servesDir(left, dir))) return { url: left, local: adopt(left, urlFile) };
  const port = localRedisPort(env);
  const url = `redis://127.0.0.1:${port}`;
  if (await redisAnswers(url)) return { url };
  const local = await startLocalRedis(port, dir);
  return { url: local.url, local };
}

/**
 * A redis-server of this project's own: 127.0.0.1 only, on `preferredPort` when free (else
 * any free port), AOF on, `maxmemory-policy noeviction`, data in `dir`. Rejects with
 * what to install when redis-server is not on PATH.
 *
 * It runs in its own process group, so a Ctrl-C meant for the stack does not stop it
 * before the workers have written their last results; `start` stops it last. Its URL is
 * kept in `dir`, so a server left running by a start that was SIGKILLed is found and
 * taken over, never doubled on the same data.
 */
/**
 * The arguments every redis-server batchline starts runs with (the local stack's, the tests',
 * the bench's): loopback only, no RDB snapshots, and `noeviction`, since an evicted job or
 * record is lost work. `appendonly` keeps accepted jobs across a restart.
 */
export function redisServerArgs(o: { port: number; dir: string; appendonly: boolean }, extra: string[] = []): string[] {
  return [
    '--port',
    String(o.port),
    '--bind',
    '127.0.0.1',
    '--dir',
    o.dir,
    '--save',
    '',
    '--appendonly',
    o.appendonly ? 'yes' : 'no',
    '--maxmemory-policy',
    'noeviction',
    ...extra,
  ];
}

async function startLocalRedis(preferredPort: number, dir: string): Promise<LocalRedis> {
  mkdirSync(dir, { recursive: true });
  const port = (await portFree(preferredPort)) ? preferredPort : await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const log = resolve(dir, 'redis.log');
  const args = redisServerArgs({ port, dir, appendonly: true }, ['--daemonize', 'no', '--logfile', log]);
  const proc = spawn('redis-server', args, { stdio: 'ignore', detached: true });
  await new Promise<void>((ok, fail) => {
    proc.once('spawn', ok);
    proc.once('error', (e: NodeJS.ErrnoException) =>
      fail(e.code === 'ENOENT' ? new Error(installRedis(`redis://127.0.0.1:${preferredPort}`)) : e),
    );
  });
  let waiting = true;
  const exitedEarly = new Promise<never>((_, fail) =>
    proc.once('exit', (code) => fail(new Error(`redis-server exited with ${code} at start; see ${log}`))),
  );
  const up = (async () => {
    while (waiting && !(await redisAnswers(url, 500))) await new Promise((r) => setTimeout(r, 50));
  })();
  try {
    await Promise.race([
      up,
      exitedEarly,
      new Promise((_, fail) =>
        setTimeout(() => fail(new Error(`redis-server did not answer at ${url} within 10 s; see ${log}`)), 10_000).unref(),
      ),
    ]);
  } catch (e) {
    proc.kill('SIGKILL');
    throw e;
  } finally {
    waiting = false;
  }
  const urlFile = resolve(dir, 'url');
  writeFileSync(urlFile, `${url}\n`);
  return owned(url, proc, urlFile);
}

/** Whether the Redis at `url` answers and keeps its data in `dir` (so it is ours). */
async function servesDir(url: string, dir: string): Promise<boolean> {
  if (!(await redisAnswers(url, 500))) return false;
  const r = new Redis(url, { connectTimeout: 500, commandTimeout: 500, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    const [, used] = (await r.config('GET', 'dir')) as [string, string];
    // Redis reports the folder it chdir'ed into: symlinks resolved.
    return used === realpathSync(dir);
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

function owned(url: string, proc: ChildProcess, urlFile: string): LocalRedis {
  let stopping = false;
  const gone = new Promise<void>((done) => proc.once('exit', () => done()));
  return {
    url,
    reused: false,
    exited: gone.then(() => (stopping ? new Promise<void>(() => {}) : undefined)),
    async stop() {
      stopping = true;
      if (proc.exitCode !== null || proc.signalCode !== null) return true;
      proc.kill('SIGTERM');
      const timer = new Promise<false>((done) => setTimeout(() => done(false), REDIS_STOP_MS).unref());
      const clean = await Promise.race([gone.then(() => true), timer]);
      if (!clean) {
        proc.kill('SIGKILL');
        await gone;
      }
      writeFileSync(urlFile, '');
      return clean;
    },
  };
}

/** Takes over a private redis-server an earlier start left running: stopped with SHUTDOWN. */
function adopt(url: string, urlFile: string): LocalRedis {
  return {
    url,
    reused: true,
    exited: new Promise<void>(() => {}),
    async stop() {
      const r = new Redis(url, { connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on('error', () => {});
      // SHUTDOWN writes the AOF and ends the server; the connection dropping is its answer.
      await Promise.race([r.call('SHUTDOWN').catch(() => {}), new Promise((done) => setTimeout(done, REDIS_STOP_MS).unref())]);
      r.disconnect();
      writeFileSync(urlFile, '');
      return !(await redisAnswers(url, 500));
    },
  };
}
