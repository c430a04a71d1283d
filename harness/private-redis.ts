/**
 * A private redis-server on a free port, for the tests (so they never touch the machine's
 * shared Redis, and fault tests can stop and restart it), the benchmark and the screenshots.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort, redisServerArgs } from '../cli/local-redis.ts';

export interface PrivateRedis {
  url: string;
  port: number;
  /** The server's process id while it runs (the benchmark reads its CPU time). */
  readonly pid: number | undefined;
  /** Stops the server (SIGTERM, or SIGKILL when `hard`). */
  stop(hard?: boolean): Promise<void>;
  /** Starts it again on the same port and data folder. */
  start(): Promise<void>;
}

async function waitForPing(url: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => {});
    try {
      await r.connect();
      if ((await r.ping()) === 'PONG') {
        r.disconnect();
        return;
      }
    } catch {
      // not up yet
    }
    r.disconnect();
    if (Date.now() > end) throw new Error(`redis at ${url} did not start`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

export async function startPrivateRedis(options: { appendonly?: boolean } = {}): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'batchline-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  let proc: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    proc = spawn('redis-server', redisServerArgs({ port, dir, appendonly: options.appendonly ?? false }, ['--appendfsync', 'always']), {
      stdio: 'ignore',
    });
    await waitForPing(url);
  };
  await start();
  return {
    url,
    port,
    get pid() {
      return proc?.pid;
    },
    start,
    stop: (hard = false) =>
      new Promise<void>((resolve) => {
        const p = proc;
        if (!p || p.exitCode !== null || p.signalCode !== null) return resolve();
        p.once('exit', () => resolve());
        p.kill(hard ? 'SIGKILL' : 'SIGTERM');
      }),
  };
}
