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
 * Common flags: --config FILE, --models DIR, --port N, --redis URL.
 */
import { parseArgs } from 'node:util';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadConfig, type BatchlineConfig, type PoolName } from '../core/config.ts';
import { createLogger } from '../core/logger.ts';

const USAGE = `usage: batchline <serve | worker --pool cpu|gpu | start | k8s render|explain FILE | model measure MODEL | plan capacity --profile FILE --rate R --slo MS | auth hash-key [KEY]> [--config FILE] [--models DIR] [--port N] [--redis URL]`;

function configFrom(values: Record<string, string | boolean | undefined>): BatchlineConfig {
  const overrides: Record<string, Record<string, unknown>> = {};
  if (typeof values.models === 'string') overrides.models = { repository: values.models };
  if (typeof values.port === 'string') overrides.http = { port: values.port };
  if (typeof values.redis === 'string') overrides.redis = { url: values.redis };
  return loadConfig({ file: typeof values.config === 'string' ? values.config : undefined, overrides });
}

/** Ends the process cleanly on SIGTERM / SIGINT, forcefully on a second signal. */
function onShutdown(stop: () => Promise<void>, log: ReturnType<typeof createLogger>): void {
  let stopping = false;
  const handler = (signal: string): void => {
    if (stopping) process.exit(1);
    stopping = true;
    log.info({ signal }, 'shutting down');
    stop().then(
      () => process.exit(0),
      (e: Error) => {
        log.error({ err: e.message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

async function serve(config: BatchlineConfig): Promise<void> {
  const logger = createLogger(config.log, { process: 'api' });
  const { createApiServer } = await import('../server/api-server.ts');
  const api = await createApiServer({ config, logger });
  const port = await api.listen();
  logger.info({ port, graphql: `http://localhost:${port}/graphql` }, 'API listening');
  onShutdown(() => api.close(), logger);
}

async function worker(config: BatchlineConfig, pool: PoolName): Promise<void> {
  const logger = createLogger(config.log, { process: `worker-${pool}` });
  const { PredictionWorker } = await import('../workers/prediction-worker.ts');
  const { startWorkerHttp } = await import('../workers/worker-http.ts');
  const w = new PredictionWorker({ config, pool, logger });
  await w.start();
  const port = Number(process.env.BATCHLINE_WORKER_HTTP_PORT ?? 0);
  const http = port > 0 ? await startWorkerHttp(w, port) : undefined;
  onShutdown(async () => {
    http?.close();
    await w.stop();
  }, logger);
}

/** API and one worker per pool as child processes; stops them all together. */
async function start(config: BatchlineConfig, argv: string[]): Promise<void> {
  const logger = createLogger(config.log, { process: 'start' });
  const self = fileURLToPath(import.meta.url);
  const children: ChildProcess[] = [];
  const run = (args: string[]): void => {
    const child = spawn(process.execPath, [self, ...args, ...argv], { stdio: 'inherit' });
    child.on('exit', (code, signal) => {
      if (!stopping) {
        logger.error({ args, code, signal }, 'a process stopped; stopping the rest');
        void stopAll().then(() => process.exit(code ?? 1));
      }
    });
    children.push(child);
  };
  let stopping = false;
  const stopAll = async (): Promise<void> => {
    stopping = true;
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once('exit', () => resolve());
            c.kill('SIGTERM');
          }),
      ),
    );
  };
  for (const pool of ['cpu', 'gpu'] as const) run(['worker', '--pool', pool]);
  run(['serve']);
  logger.info({ port: config.http.port }, `batchline starting: http://localhost:${config.http.port}/graphql`);
  onShutdown(stopAll, logger);
}

export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
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
    options: { pool: { type: 'string' }, config: { type: 'string' }, models: { type: 'string' }, port: { type: 'string' }, redis: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
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
      await start(config, rest);
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
