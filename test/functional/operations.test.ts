/**
 * What operators rely on: `batchline start` (the README's first command) serves and stops
 * cleanly; a request id flows from the API into the worker's log lines; /metrics, /health,
 * /ready and GraphiQL answer; logs can also go to a daily-rotated file.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../../cli/local-redis.ts';
import { createLogger } from '../../core/telemetry/logger.ts';
import { gql } from '../support/clients.ts';
import { dropPrefix, listeningPort, spawnCli, startApi, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('ops');
const opts = { redisUrl, prefix, env: { BATCHLINE_MAINTENANCE: 'false' } };

describe('batchline start', () => {
  it('runs the API, a cpu and a gpu worker in one command, answers Maria, and stops them all on SIGTERM', async () => {
    // Port 0, read back from the log: a port probed free could be taken before the child binds it.
    const start = await spawnCli(
      ['start', '--port', '0'],
      { ...opts, env: { ...opts.env, BATCHLINE_HOST: '127.0.0.1' } },
      /"msg":"API listening"/,
    );
    const port = listeningPort(start);
    try {
      const url = `http://127.0.0.1:${port}/graphql`;
      // Workers may still be loading when the API listens: wait for readiness of the model.
      const allReady = async (): Promise<boolean> => {
        const m = await gql<{ models: { name: string; ready: boolean }[] }>(url, '{ models { name ready } }');
        return m.body.data!.models.every((x) => x.ready);
      };
      await until(allReady, 'every model ready', 30_000, 100);
      const r = await gql<{ predict: { label: string; score: number } }>(
        url,
        '{ predict(model: "name-gender", input: { text: "Maria" }) { label score } }',
      );
      expect(r.body.data!.predict.label).toBe('female');
      const m = await gql<{ predict: { predictions: unknown[] } }>(
        url,
        `{ predict(model: "mlp-bench", input: { features: [${Array(512).fill(0.1).join(',')}] }) { predictions { label } } }`,
      );
      expect(m.body.data!.predict.predictions).toHaveLength(1);
    } finally {
      expect(await start.stop()).toBe(0);
    }
    const out = start.output();
    expect(out.match(/"msg":"worker stopped"/g)).toHaveLength(2);
    await dropPrefix(redisUrl, prefix);
  });
});

describe('observability', () => {
  let api: RunningApi;
  let worker: Child;
  let workerHttp: string;

  beforeAll(async () => {
    const port = await freePort();
    workerHttp = `http://127.0.0.1:${port}`;
    worker = await spawnCli(
      ['worker', '--pool', 'cpu'],
      { ...opts, env: { ...opts.env, BATCHLINE_LOG_LEVEL: 'debug', BATCHLINE_WORKER_HTTP_PORT: String(port) } },
      /"msg":"worker started"/,
    );
    api = await startApi(opts);
  });

  afterAll(async () => {
    await api?.close();
    await worker?.stop();
    await dropPrefix(redisUrl, prefix);
  });

  it('carries the caller’s x-request-id into the job and the worker’s log line', async () => {
    const r = await gql(api.url, '{ predict(model: "name-gender", input: { text: "Reginald" }) { label } }', undefined, {
      'x-request-id': 'req-abc-123',
    });
    expect(r.body.errors).toBeUndefined();
    // The worker's log is written asynchronously: wait for the line, don't assume it is there.
    const find = () =>
      worker
        .output()
        .split('\n')
        .find((l) => l.includes('"requestId":"req-abc-123"'));
    await until(() => find() !== undefined, 'the worker’s log line with the request id', 10_000, 50);
    const line = find();
    expect(line).toBeDefined();
    expect(JSON.parse(line!)).toMatchObject({ requestId: 'req-abc-123', model: 'name-gender', msg: 'predicted' });
  });

  it('exports Prometheus metrics: requests by model and outcome, latency by phase, cache, queue depth', async () => {
    await gql(api.url, '{ predict(model: "name-gender", input: { text: "Rosalind" }) { label } }');
    await gql(api.url, '{ predict(model: "name-gender", input: { text: "Rosalind" }) { label } }');
    await gql(api.url, '{ predict(model: "nope", input: { text: "x" }) { label } }');
    const res = await fetch(api.url.replace('/graphql', '/metrics'));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/plain/);
    const text = await res.text();
    expect(text).toMatch(/batchline_requests_total\{[^}]*model="name-gender"[^}]*outcome="ok"[^}]*\} [1-9]/);
    expect(text).toMatch(/batchline_requests_total\{[^}]*outcome="MODEL_NOT_FOUND"[^}]*\} 1/);
    expect(text).toMatch(/batchline_latency_seconds_bucket\{[^}]*phase="total"/);
    expect(text).toMatch(/batchline_cache_hits_total\{[^}]*model="name-gender"[^}]*\} [1-9]/);
    expect(text).toMatch(/batchline_queue_depth\{[^}]*pool="cpu"[^}]*\} 0/);
  });

  it('a worker answers /health, /ready and /metrics on workers.httpPort', async () => {
    // The worker logs "worker started" before its HTTP side listens.
    await until(async () => (await fetch(`${workerHttp}/health`).catch(() => undefined))?.status === 200, 'the worker’s /health');
    expect(await (await fetch(`${workerHttp}/ready`)).json()).toMatchObject({ ready: true });
    const metrics = await fetch(`${workerHttp}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^# HELP batchline_/m);
  });

  it('answers /health, /ready and serves GraphiQL to a browser', async () => {
    const base = api.url.replace('/graphql', '');
    expect((await fetch(`${base}/health`)).status).toBe(200);
    expect((await fetch(`${base}/ready`)).status).toBe(200);
    const page = await fetch(api.url, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/graphiql/i);
  });
});

describe('file logging', () => {
  it('writes JSON lines to a file rotated daily, named by date', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'batchline-logs-'));
    const logger = createLogger({ level: 'info', file: join(dir, 'batchline.log'), retentionDays: 7 });
    logger.info({ probe: 42 }, 'hello file');
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    // The transport writes from its own thread; give it its turn.
    await until(
      () => readdirSync(dir).some((f) => readFileSync(join(dir, f), 'utf8').includes('hello file')),
      'the line in the log file',
      10_000,
      50,
    );
    const files = readdirSync(dir);
    expect(files.some((f) => /batchline\.\d{4}-\d{2}-\d{2}\.1\.log$/.test(f))).toBe(true);
    const line = files
      .map((f) => readFileSync(join(dir, f), 'utf8'))
      .join('')
      .split('\n')
      .find((l) => l.includes('hello file'));
    expect(JSON.parse(line!)).toMatchObject({ probe: 42, msg: 'hello file' });
    expect(existsSync(dir)).toBe(true);
  });
});
