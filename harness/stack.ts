/**
 * Real processes for tests, the benchmark and the screenshots: the API in-process on a free
 * port (still real HTTP and WebSocket), workers and extra APIs as child processes of `cli/main.ts`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { loadConfig, type BatchlineConfig } from '../core/config/settings.ts';
import { createLogger } from '../core/telemetry/logger.ts';
import { createApiServer, type ApiServer } from '../server/api-server.ts';

export const CLI = fileURLToPath(new URL('../cli/main.ts', import.meta.url));
export const REPO_MODELS = fileURLToPath(new URL('../models', import.meta.url));

export function uniquePrefix(name: string): string {
  return `bltest-${name}-${randomUUID().slice(0, 8)}`;
}

export interface StackOptions {
  redisUrl: string;
  prefix: string;
  models?: string;
  /** Extra BATCHLINE_* environment for every process. */
  env?: Record<string, string>;
  /** Working folder of spawned processes (`start` keeps a private Redis's data under it). */
  cwd?: string;
}

function envFor(o: StackOptions): Record<string, string> {
  return {
    BATCHLINE_REDIS_URL: o.redisUrl,
    BATCHLINE_REDIS_PREFIX: o.prefix,
    BATCHLINE_MODELS: o.models ?? REPO_MODELS,
    BATCHLINE_LOG_LEVEL: process.env.BATCHLINE_TEST_LOG_LEVEL ?? 'warn',
    // gRPC off unless a test asks: processes of parallel test files must not share its default port.
    BATCHLINE_GRPC_PORT: '0',
    ...o.env,
  };
}

export function configFor(o: StackOptions): BatchlineConfig {
  return loadConfig({ env: envFor(o) });
}

export interface RunningApi {
  url: string;
  ws: string;
  /** `127.0.0.1:<port>` of the inference protocol's gRPC door, when startApi was asked for it. */
  grpc?: string;
  api: ApiServer;
  close(): Promise<void>;
}

/** Starts an API in this process on a free port; with `grpc`, its gRPC door too, on another free port. */
export async function startApi(o: StackOptions & { grpc?: boolean }): Promise<RunningApi> {
  const config = configFor(o);
  const api = await createApiServer({ config, logger: createLogger(config.log) });
  const port = await api.listen(0, '127.0.0.1');
  const grpcPort = o.grpc ? await api.listenGrpc(0, '127.0.0.1') : undefined;
  return {
    url: `http://127.0.0.1:${port}/graphql`,
    ws: `ws://127.0.0.1:${port}/graphql`,
    ...(grpcPort ? { grpc: `127.0.0.1:${grpcPort}` } : {}),
    api,
    close: async () => void (await api.close()),
  };
}

export interface Child {
  proc: ChildProcess;
  output: () => string;
  /** SIGTERM, then waits for exit. */
  stop(): Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** The port an API child bound (started with port 0), from its "API listening" log line. */
export function listeningPort(child: Child): number {
  const m = /"port":(\d+)[^\n]*"msg":"API listening"/.exec(child.output());
  if (!m) throw new Error(`no "API listening" line with a port in:\n${child.output()}`);
  return Number(m[1]);
}

/**
 * Children that died of an unhandled rejection or exception, whoever started them. Node
 * prints `triggerUncaughtException` on its way out; test/support/crashes.ts fails the file.
 */
export const crashedChildren: string[] = [];
/** Children still running, so that a test failing before its own cleanup leaves none behind. */
export const liveChildren = new Set<ChildProcess>();
const CRASH = /triggerUncaughtException|ERR_UNHANDLED_REJECTION|Unhandled promise rejection/;

/** Spawns `cli/main.ts <args>` and resolves once `readyLine` appears in its output. */
export function spawnCli(args: string[], o: StackOptions, readyLine: RegExp, timeoutMs = 30_000): Promise<Child> {
  const proc = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...envFor(o), BATCHLINE_LOG_LEVEL: o.env?.BATCHLINE_LOG_LEVEL ?? 'info' },
    cwd: o.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  liveChildren.add(proc);
  let out = '';
  // 'close', not 'exit': it comes after the child's output is read to the end, so a line the
  // process logged while exiting (pino writes asynchronously) is in output() when stop() resolves.
  const closed = new Promise<number | null>((resolve) =>
    proc.once('close', (code) => {
      liveChildren.delete(proc);
      if (CRASH.test(out)) crashedChildren.push(`${args.join(' ')} (exit ${code}):\n${out.slice(-2000)}`);
      resolve(code);
    }),
  );
  const running = (): boolean => proc.exitCode === null && proc.signalCode === null;
  const child: Child = {
    proc,
    output: () => out,
    stop: () => {
      if (running()) proc.kill('SIGTERM');
      return closed;
    },
    kill: async (signal = 'SIGKILL') => {
      if (running()) proc.kill(signal);
      await closed;
    },
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${args.join(' ')} not ready in ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (readyLine.test(out)) {
        clearTimeout(timer);
        resolve(child);
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(' ')} exited with ${code ?? signal}:\n${out}`));
    });
  });
}

export function startWorker(pool: 'cpu' | 'gpu', o: StackOptions): Promise<Child> {
  return spawnCli(['worker', '--pool', pool], o, /"msg":"worker started"/);
}

/** Deletes every key under the test's prefix (never FLUSHALL: the Redis may be shared). */
export async function dropPrefix(redisUrl: string, prefix: string): Promise<void> {
  const r = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}
