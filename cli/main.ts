#!/usr/bin/env node
/**
 * The `batchline` command:
 *   serve                    the GraphQL API
 *   worker --pool cpu|gpu    a worker of one pool
 *   start                    API + one worker per pool, for local use
 *   k8s render|explain FILE  Kubernetes manifests from a ModelServer resource
 *   model measure MODEL      resident memory of a model, for sizing
 *   plan capacity --profile FILE --rate R --slo MS [--policy P]   replicas and slots for a rate, simulated
 *   auth hash-key [KEY]      the sha256 hex of an API key, for auth.keys (KEY from stdin if left out)
 *   capture export --model M [--since T] [--format jsonl] [--out FILE]   a model's captured requests, as JSON lines
 * Common flags: --config FILE, --models DIR, --port N, --redis URL.
 */
import { parseArgs } from 'node:util';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadConfig, type BatchlineConfig, type PoolName } from '../core/config/settings.ts';
import { createLogger, type Logger } from '../core/telemetry/logger.ts';
import { startTracing } from '../core/telemetry/tracing.ts';
import { HARD_EXIT_SLACK_MS, shutdownBoundMs } from '../core/lifecycle/shutdown.ts';
import { LOCAL_REDIS_DIR, REDIS_STOP_MS, localRedisFor, redisAnswers, redisUrlConfigured, type LocalRedis } from './local-redis.ts';

const USAGE = `usage: batchline <serve | worker --pool cpu|gpu | start | k8s render|explain FILE | model measure MODEL | plan capacity --profile FILE --rate R --slo MS | auth hash-key [KEY] | capture export --model M [--since T]> [--config FILE] [--models DIR] [--port N] [--redis URL]`;

function configFrom(values: Record<string, string | boolean | undefined>): BatchlineConfig {
  const overrides: Record<string, Record<string, unknown>> = {};
  if (typeof values.models === 'string') overrides.models = { repository: values.models };
  if (typeof values.port === 'string') overrides.http = { port: values.port };
  if (typeof values.redis === 'string') overrides.redis = { url: values.redis };
  return loadConfig({ file: typeof values.config === 'string' ? values.config : undefined, overrides });
}

/**
 * Ends the process on SIGTERM / SIGINT, or when the `start` that spawned it is gone. `stop`
 * is bounded itself (core/lifecycle/shutdown.ts); a hard timer HARD_EXIT_SLACK_MS past `boundMs` is
 * the last resort. Exits 1 when `stop` gave up on work, and at once on a second signal.
 */
function onShutdown(stop: () => Promise<boolean>, log: Logger, boundMs: number): void {
  let stopping = false;
  const handler = (signal: string): void => {
    if (stopping) process.exit(1);
    stopping = true;
    // Should the loop drain with `stop` unsettled, the process must not look clean.
    process.exitCode = 1;
    log.info({ signal, boundMs }, 'shutting down');
    setTimeout(() => {
      log.error({ boundMs }, 'shutdown overran its bound; exiting with what it was doing unfinished');
      process.exit(1);
    }, boundMs + HARD_EXIT_SLACK_MS).unref();
    stop().then(
      (clean) => process.exit(clean ? 0 : 1),
      (e: Error) => {
        log.error({ err: e.message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  // A child of `start` has its own process group (see start): its parent's end is its signal.
  if (process.send) process.once('disconnect', () => handler('parent gone'));
}

/** Spans still queued get this long to reach the collector at shutdown (inside the hard-exit slack). */
const TRACE_FLUSH_MS = 1000;

async function serve(config: BatchlineConfig): Promise<void> {
  const logger = createLogger(config.log, { process: 'api' });
  const tracing = await startTracing(config.tracing, { role: 'api', logger });
  const { createApiServer } = await import('../server/api-server.ts');
  const api = await createApiServer({ config, logger });
  const port = await api.listen();
  const grpcPort = config.grpc.port > 0 ? await api.listenGrpc(config.grpc.port) : undefined;
  logger.info(
    {
      port,
      graphql: `http://localhost:${port}/graphql`,
      inferenceProtocol: `http://localhost:${port}/v2`,
      grpcPort,
      maxConnections: api.connections.cap,
    },
    'API listening',
  );
  onShutdown(
    async () => {
      const clean = await api.close();
      await tracing?.shutdown(TRACE_FLUSH_MS);
      return clean;
    },
    logger,
    shutdownBoundMs(config, 'api'),
  );
}

async function worker(config: BatchlineConfig, pool: PoolName): Promise<void> {
  const logger = createLogger(config.log, { process: `worker-${pool}` });
  const tracing = await startTracing(config.tracing, { role: 'worker', pool, logger });
  const { PredictionWorker } = await import('../workers/prediction-worker.ts');
  const { startWorkerHttp } = await import('../workers/worker-http.ts');
  const w = new PredictionWorker({ config, pool, logger });
  await w.start();
  const port = config.workers.httpPort;
  const http = port > 0 ? await startWorkerHttp(w, port) : undefined;
  onShutdown(
    async () => {
      http?.close();
      const clean = await w.stop();
      await tracing?.shutdown(TRACE_FLUSH_MS);
      return clean;
    },
    logger,
    shutdownBoundMs(config, 'worker'),
  );
}

/** SIGTERM, then SIGKILL once `boundMs` has passed; resolves true when it exited 0 by itself. */
function stopChild(child: ChildProcess, boundMs: number, log: Logger): Promise<boolean> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode === 0);
    const kill = setTimeout(() => {
      log.error({ pid: child.pid, boundMs }, 'a process did not stop within its bound; killing it');
      child.kill('SIGKILL');
    }, boundMs);
    child.once('exit', (code) => {
      clearTimeout(kill);
      resolve(code === 0);
    });
    child.kill('SIGTERM');
  });
}

/**
 * API and one worker per pool as child processes, on the configured Redis or, when none is
 * configured and none answers locally, on a private one (cli/local-redis.ts); stops them all
 * together, the Redis last. Children run in process groups of their own, so a Ctrl-C reaches
 * them once, from here, not also from the terminal.
 */
async function start(config: BatchlineConfig, argv: string[], redisConfigured: boolean): Promise<void> {
  const logger = createLogger(config.log, { process: 'start' });
  const self = fileURLToPath(import.meta.url);
  const children: ChildProcess[] = [];
  let local: Promise<LocalRedis | undefined> = Promise.resolve(undefined);
  let stopping = false;
  // A child's own graceful bound and hard timer, and a second for its exit to arrive.
  const childBoundMs = Math.max(shutdownBoundMs(config, 'api'), shutdownBoundMs(config, 'worker')) + HARD_EXIT_SLACK_MS + 1000;
  const stopAll = async (): Promise<boolean> => {
    stopping = true;
    const stopped = await Promise.all(children.map((c) => stopChild(c, childBoundMs, logger)));
    const redis = await local.catch(() => undefined);
    const redisStopped = redis ? await redis.stop() : true;
    const unclean = stopped.filter((ok) => !ok).length;
    if (unclean || !redisStopped)
      logger.warn(
        { processesUnclean: unclean, redisKilled: !redisStopped },
        'stack stopped; what each process gave up on is in its last line',
      );
    else logger.info('stack stopped');
    return unclean === 0 && redisStopped;
  };
  const stopRest = (what: Record<string, unknown>): void => {
    if (stopping) return;
    logger.error(what, 'a process stopped; stopping the rest');
    void stopAll().then(() => process.exit(1));
  };
  // Before anything starts: a signal during start-up still stops what did start.
  onShutdown(stopAll, logger, childBoundMs + REDIS_STOP_MS);

  const env: NodeJS.ProcessEnv = { ...process.env };
  if (!redisConfigured) {
    local = localRedisFor(process.env).then(({ url, local: own }) => {
      env.BATCHLINE_REDIS_URL = url;
      if (own?.reused)
        logger.info({ redis: url }, `took over the private redis-server an earlier start left running at ${url}; it stops with the stack`);
      else if (own)
        logger.info(
          { redis: url, data: LOCAL_REDIS_DIR },
          `no Redis answered at the default address: started a private redis-server at ${url} (data in ${LOCAL_REDIS_DIR}); it stops with the stack`,
        );
      void own?.exited.then(() => stopRest({ redis: url, reason: 'the private redis-server exited' }));
      return own;
    });
    await local;
  } else if (!config.redis.cluster?.trim() && !(await redisAnswers(config.redis.url))) {
    logger.warn({ redis: config.redis.url }, 'the configured Redis does not answer; starting anyway (503 until it does)');
  }
  if (stopping) return;
  const run = (args: string[]): void => {
    const child = spawn(process.execPath, [self, ...args, ...argv], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      detached: true,
      env,
    });
    child.on('exit', (code, signal) => stopRest({ args, code, signal }));
    children.push(child);
  };
  for (const pool of ['cpu', 'gpu'] as const) run(['worker', '--pool', pool]);
  run(['serve']);
  logger.info({ port: config.http.port }, `batchline starting: http://localhost:${config.http.port}/graphql`);
}

export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  if (command === '--help' || command === '-h' || command === 'help') {
    console.log(USAGE);
    return 0;
  }
  if (command === 'auth') {
    // Before parseArgs: the key is a positional. Left out, it is read from stdin (not shell history).
    if (rest[0] !== 'hash-key' || rest.length > 2) {
      console.error('usage: batchline auth hash-key [KEY]   (KEY read from stdin when left out)');
      return 2;
    }
    let key = rest[1];
    if (key === undefined) {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      key = Buffer.concat(chunks).toString('utf8');
    }
    // Keys are read trimmed everywhere, as servers read headers.
    key = key.trim();
    if (!key) {
      console.error('batchline auth hash-key: empty key');
      return 2;
    }
    const { hashApiKey } = await import('../server/auth.ts');
    console.log(hashApiKey(key));
    return 0;
  }
  if (command === 'capture') {
    const { runCaptureCli } = await import('./capture.ts');
    return runCaptureCli(rest);
  }
  if (command === 'plan') {
    const { runPlanCli } = await import('./plan.ts');
    return runPlanCli(rest);
  }
  if (command === 'k8s' || command === 'model') {
    const { runK8sCli } = await import('../k8s/cli.ts');
    return runK8sCli(args);
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      pool: { type: 'string' },
      config: { type: 'string' },
      models: { type: 'string' },
      port: { type: 'string' },
      redis: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help || !command) {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  const config = configFrom(values);
  switch (command) {
    case 'serve':
      await serve(config);
      return -1;
    case 'worker': {
      const pool = values.pool ?? 'cpu';
      if (pool !== 'cpu' && pool !== 'gpu') {
        console.error(`--pool must be cpu or gpu, got ${pool}`);
        return 2;
      }
      await worker(config, pool);
      return -1;
    }
    case 'start':
      // A configured cluster is as explicit as a configured URL: never replaced by a private Redis.
      await start(config, rest, Boolean(config.redis.cluster?.trim()) || redisUrlConfigured(values.redis, values.config, process.env));
      return -1;
    default:
      console.error(USAGE);
      return 2;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === (await import('node:fs')).realpathSync(process.argv[1])) {
  main(process.argv.slice(2)).then(
    (code) => {
      if (code >= 0) process.exit(code);
    },
    (e: Error) => {
      console.error(e.message);
      process.exit(1);
    },
  );
}
