/**
 * `serverStats`, the operations view's figures: every process adds its counter movements to
 * shared per-second sums in Redis, so any API replica shows the whole deployment; a key
 * without `admin` sees only its models; refusals are counted by code (rate limits too); the
 * subscription streams the figures and ends when its replica shuts down.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Counter, Registry } from 'prom-client';
import { gql } from '../support/clients.ts';
import { listeningPort, spawnCli, startApi, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import { useStack } from '../support/use-stack.ts';
import { until } from '../support/wait.ts';
import { createRedis, whenReady } from '../../core/redis/connection.ts';
import { createMetrics } from '../../core/telemetry/metrics.ts';
import { StatsReader, StatsRecorder, counterSum, histogram } from '../../core/operations/live-stats.ts';
import { histogramQuantile } from '../../core/telemetry/histogram.ts';
import { hashApiKey } from '../../server/auth.ts';

const redisUrl = inject('redisUrl');

describe('histogramQuantile', () => {
  const b = (pairs: [number, number][]) => pairs.map(([le, count]) => ({ le, count }));

  it('interpolates inside the bucket that holds the rank, from 0 for the first', () => {
    expect(
      histogramQuantile(
        0.5,
        b([
          [1, 0],
          [2, 10],
          [4, 10],
          [Infinity, 10],
        ]),
      ),
    ).toBeCloseTo(1.5);
    expect(
      histogramQuantile(
        0.99,
        b([
          [1, 0],
          [2, 10],
          [4, 10],
          [Infinity, 10],
        ]),
      ),
    ).toBeCloseTo(1.99);
    expect(
      histogramQuantile(
        0.5,
        b([
          [1, 4],
          [Infinity, 4],
        ]),
      ),
    ).toBeCloseTo(0.5);
    expect(
      histogramQuantile(
        0.9,
        b([
          [1, 5],
          [2, 10],
          [Infinity, 10],
        ]),
      ),
    ).toBeCloseTo(1.8);
  });

  it('answers the highest finite bound for a rank in +Inf, and nothing without observations', () => {
    expect(
      histogramQuantile(
        0.99,
        b([
          [1, 1],
          [2, 1],
          [Infinity, 10],
        ]),
      ),
    ).toBe(2);
    expect(
      histogramQuantile(
        0.5,
        b([
          [1, 0],
          [Infinity, 0],
        ]),
      ),
    ).toBeUndefined();
    expect(histogramQuantile(0.5, [])).toBeUndefined();
  });
});

describe('StatsRecorder and StatsReader', () => {
  const prefix = uniquePrefix('livestats');
  const redis = createRedis(redisUrl, 'producer');
  const reader = new StatsReader(redis, prefix);
  // A fixed instant, so the test decides which second and step each tick lands in.
  const T = 1_900_000_000_000;
  let now = T;

  beforeAll(() => whenReady(redis));
  afterAll(() => redis.disconnect());

  function process(id: string) {
    const metrics = createMetrics('api');
    return {
      metrics,
      recorder: new StatsRecorder({ redis, prefix, registry: metrics.registry, process: { id, role: 'api' }, now: () => now }),
    };
  }
  const predicted = (m: ReturnType<typeof createMetrics>, n: number) =>
    m.requests.inc({ model: 'm', operation: 'predict', outcome: 'ok' }, n);
  const requestsIn = async (seconds: number) => counterSum(await reader.window(now, seconds), 'batchline_requests_total', { model: 'm' });

  it('sums every process, counts each movement once, and leaves out the second still being filled', async () => {
    const a = process('a');
    const b = process('b');
    predicted(a.metrics, 3);
    predicted(b.metrics, 4);
    a.metrics.latency.observe({ model: 'm', phase: 'total' }, 0.004);
    await Promise.all([a.recorder.tick(), b.recorder.tick()]);
    expect(await requestsIn(10)).toBe(0);
    now = T + 1000;
    expect(await requestsIn(10)).toBe(7);
    // No movement: the next ticks add nothing.
    await Promise.all([a.recorder.tick(), b.recorder.tick()]);
    now = T + 2000;
    expect(await requestsIn(10)).toBe(7);
    expect((await reader.processes(now)).map((p) => p.id).sort()).toEqual(['a', 'b']);
    const [step] = (await reader.steps(T + 5000, 1)).map((s) => s.entries);
    expect(counterSum(step, 'batchline_requests_total')).toBe(7);
    expect(counterSum(step, 'batchline_latency_seconds_count', { model: 'm', phase: 'total' })).toBe(1);
    await a.recorder.close();
    expect((await reader.processes(now)).map((p) => p.id)).toEqual(['b']);
  });

  it('a restarted process adds only what it counted since; a tick that failed is added by the next', async () => {
    const restarted = process('a2');
    predicted(restarted.metrics, 2);
    await restarted.recorder.tick();
    now = T + 3000;
    expect(await requestsIn(10)).toBe(9);

    const offline = createRedis(redisUrl, 'producer');
    const metrics = createMetrics('worker');
    const recorder = new StatsRecorder({
      redis: offline,
      prefix,
      registry: metrics.registry,
      process: { id: 'w', role: 'worker', pool: 'cpu' },
      now: () => now,
    });
    metrics.jobs.inc({ model: 'm', outcome: 'ok' }, 5);
    await whenReady(offline);
    offline.disconnect();
    await until(() => offline.status === 'end', 'the connection to close');
    await recorder.tick();
    expect(counterSum(await reader.window(T + 4000, 10), 'batchline_worker_jobs_total')).toBe(0);
    await offline.connect();
    await recorder.tick();
    now = T + 4000;
    expect(counterSum(await reader.window(now, 10), 'batchline_worker_jobs_total', { model: 'm' })).toBe(5);
    offline.disconnect();
  });

  it('a histogram that moved writes every bucket, so a quantile interpolates from the bucket below', async () => {
    const p = process('h');
    p.metrics.latency.observe({ model: 'q', phase: 'total' }, 0.007);
    await p.recorder.tick();
    now += 1000;
    const h = histogram(await reader.window(now, 10), 'batchline_latency_seconds', { model: 'q', phase: 'total' });
    expect(h.buckets.slice(0, 4)).toEqual([
      { le: 0.001, count: 0 },
      { le: 0.0025, count: 0 },
      { le: 0.005, count: 0 },
      { le: 0.01, count: 1 },
    ]);
    // Halfway through (5 ms, 10 ms], not through (0, 10 ms].
    expect(histogramQuantile(0.5, h.buckets)! * 1000).toBeCloseTo(7.5);
  });

  it('other counters of a registry are not summed', async () => {
    const registry = new Registry();
    new Counter({ name: 'something_else_total', help: 'x', registers: [registry] }).inc(3);
    await new StatsRecorder({ redis, prefix, registry, process: { id: 'x', role: 'api' }, now: () => now }).tick();
    now += 1000;
    expect(counterSum(await reader.window(now, 10), 'something_else_total')).toBe(0);
  });
});

const STATS = `query($w: Int) { serverStats(windowSeconds: $w) {
  viewer { name admin authEnabled } processes { role pool } queues { pool waiting maxDepth } rejections { code status count }
  models { name acceptsText versions { version status workers } requestsPerSecond latency { phase count p50Ms p99Ms } batchSizes { rows count } batchReasons { label count } cacheHitRatio drift { status } history { at requestsPerSecond } }
} }`;

type Stats = {
  viewer: { name: string; admin: boolean; authEnabled: boolean };
  processes: { role: string; pool: string | null }[] | null;
  queues: { pool: string; waiting: number; maxDepth: number }[];
  rejections: { code: string; status: number; count: number }[] | null;
  models: {
    name: string;
    acceptsText: boolean;
    requestsPerSecond: number;
    latency: { phase: string; count: number; p50Ms: number | null }[];
    batchSizes: { rows: number | null; count: number }[];
    batchReasons: { label: string; count: number }[];
    cacheHitRatio: number | null;
    history: unknown[];
  }[];
};

async function stats(url: string, headers: Record<string, string> = {}, windowSeconds = 60): Promise<Stats> {
  const r = await gql<{ serverStats: Stats }>(url, STATS, { w: windowSeconds }, headers);
  expect(r.body.errors).toBeUndefined();
  return r.body.data!.serverStats;
}

describe('serverStats across the deployment', () => {
  const prefix = uniquePrefix('opsstats');
  const stack = useStack({ redisUrl, prefix }, ['cpu']);
  let second: Child;
  let secondUrl: string;

  beforeAll(async () => {
    second = await spawnCli(
      ['serve', '--port', '0'],
      { redisUrl, prefix, env: { BATCHLINE_HOST: '127.0.0.1', BATCHLINE_MAINTENANCE: 'false' } },
      /"msg":"API listening"/,
    );
    secondUrl = `http://127.0.0.1:${listeningPort(second)}/graphql`;
  });

  afterAll(async () => {
    await second?.stop();
  });

  it("one replica shows predictions another replica answered, with the worker's queue and inference time", async () => {
    const names = Array.from({ length: 12 }, (_, i) => `Replica${i}`);
    for (const n of names)
      expect((await gql(secondUrl, `{ predict(model: "name-gender", input: { text: "${n}" }) { label } }`)).status).toBe(200);
    let s: Stats | undefined;
    const figures = (m: Stats['models'][number], phase: string) => m.latency.find((l) => l.phase === phase)!;
    await until(async () => {
      s = await stats(stack.api.url);
      const m = s.models.find((x) => x.name === 'name-gender')!;
      return figures(m, 'total').count === 12 && figures(m, 'queue').count === 12 && m.batchSizes.some((b) => b.count > 0);
    }, "the first replica to see the second one's predictions");
    const m = s!.models.find((x) => x.name === 'name-gender')!;
    expect(m.requestsPerSecond).toBeCloseTo(12 / 60);
    expect(m.acceptsText).toBe(true);
    expect(figures(m, 'inference').count).toBe(12);
    expect(figures(m, 'total').p50Ms).toBeGreaterThan(0);
    expect(m.cacheHitRatio).toBe(0);
    // The cpu pool runs one request per inference.
    expect(m.batchSizes.find((b) => b.rows === 1)?.count).toBe(12);
    expect(m.batchReasons).toEqual([{ label: 'full', count: 12 }]);
    expect(s!.processes!.filter((p) => p.role === 'api')).toHaveLength(2);
    expect(s!.processes!.filter((p) => p.role === 'worker')).toEqual([{ role: 'worker', pool: 'cpu' }]);
    expect(s!.queues.map((q) => q.pool)).toEqual(['cpu', 'gpu']);
    expect(s!.queues[0]).toMatchObject({ waiting: 0, maxDepth: 10000 });
    expect(s!.viewer).toEqual({ name: 'anonymous', admin: true, authEnabled: false });
    expect(s!.models.find((x) => x.name === 'mlp-bench')!.acceptsText).toBe(false);
  });

  it('counts refusals by code, rate limits included, across replicas and in /metrics', async () => {
    const limited = await startApi({
      redisUrl,
      prefix,
      env: { BATCHLINE_RATE_LIMIT_PER_SECOND: '0.001', BATCHLINE_RATE_LIMIT_BURST: '1' },
    });
    try {
      const statuses = [];
      for (let i = 0; i < 3; i++) statuses.push((await gql(limited.url, '{ __typename }')).status);
      expect(statuses).toEqual([200, 429, 429]);
      await until(
        async () => (await stats(stack.api.url)).rejections!.some((r) => r.code === 'RATE_LIMITED' && r.count === 2),
        'two RATE_LIMITED refusals in the figures',
      );
      const metrics = await (await fetch(limited.url.replace('/graphql', '/metrics'))).text();
      expect(metrics).toMatch(/batchline_rejections_total\{[^}]*code="RATE_LIMITED"[^}]*\} 2/);
    } finally {
      await limited.close();
    }
  });

  it('refuses bad arguments with BAD_USER_INPUT', async () => {
    const r = await gql(stack.api.url, '{ serverStats(windowSeconds: 0) { at } }');
    expect(r.status).toBe(400);
    expect(r.body.errors![0].extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'windowSeconds' });
  });

  it('streams the figures over SSE, and ends the stream with SERVICE_UNAVAILABLE when its replica shuts down', async () => {
    const leaving = await startApi({ redisUrl, prefix });
    const res = await fetch(leaving.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ query: 'subscription { serverStats(intervalMs: 500, historyMinutes: 0) { at models { name } } }' }),
    });
    const events: { data?: { serverStats: { at: string } }; errors?: { extensions?: { code?: string } }[] }[] = [];
    const decoder = new TextDecoder();
    let buffer = '';
    let closing: Promise<void> | undefined;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let i;
      while ((i = buffer.indexOf('\n\n')) >= 0) {
        const data = /^data: (.*)$/m.exec(buffer.slice(0, i))?.[1];
        buffer = buffer.slice(i + 2);
        if (data) events.push(JSON.parse(data));
      }
      if (events.length >= 2) closing ??= leaving.close();
    }
    await closing;
    const figures = events.filter((e) => e.data);
    expect(figures.length).toBeGreaterThanOrEqual(2);
    expect(new Set(figures.map((e) => e.data!.serverStats.at)).size).toBe(figures.length);
    expect(events.at(-1)!.errors?.[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE');
  });
});

describe('serverStats with auth on', () => {
  const prefix = uniquePrefix('opsauth');
  const KEYS = { web: 'web-77d1a0c3e5', ops: 'ops-3b6e9f21c8' };
  let api: RunningApi;

  beforeAll(async () => {
    api = await startApi({
      redisUrl,
      prefix,
      env: {
        BATCHLINE_AUTH: 'true',
        BATCHLINE_API_KEYS: `web:${hashApiKey(KEYS.web)}:predict:name-gender;ops:${hashApiKey(KEYS.ops)}:admin`,
      },
    });
  });

  afterAll(async () => {
    await api?.close();
  });

  it('asks for a key', async () => {
    const r = await gql(api.url, '{ serverStats { at } }');
    expect(r.status).toBe(401);
    expect(r.body.errors![0].extensions!.code).toBe('UNAUTHENTICATED');
  });

  it('shows a key without admin only its models and their pools, no processes and no deployment-wide refusals', async () => {
    const s = await stats(api.url, { 'x-api-key': KEYS.web });
    expect(s.viewer).toEqual({ name: 'web', admin: false, authEnabled: true });
    expect(s.models.map((m) => m.name)).toEqual(['name-gender']);
    expect(s.queues.map((q) => q.pool)).toEqual(['cpu']);
    expect(s.processes).toBeNull();
    expect(s.rejections).toBeNull();
  });

  it('shows an admin key everything', async () => {
    const s = await stats(api.url, { 'x-api-key': KEYS.ops });
    expect(s.models.map((m) => m.name).sort()).toEqual(['mlp-bench', 'name-gender', 'spam-mlp']);
    expect(s.processes).not.toBeNull();
    expect(s.rejections).not.toBeNull();
  });
});
