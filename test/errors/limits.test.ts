/**
 * GraphQL limits (graphql-armor): an operation too deep, with too many aliases, tokens or
 * too much cost answers 400 GRAPHQL_VALIDATION_FAILED and is never run, over HTTP and over
 * WebSocket alike; field suggestions are hidden. Introspection and GraphiQL switch off.
 * Per-key rate limits answer 429 RATE_LIMITED with Retry-After, hold across API replicas
 * (the bucket is in Redis), leave other keys alone, and fail open when Redis is down.
 *
 * No worker and no other process is needed: every API here runs in this process on a free
 * port (startApi: real HTTP and WebSocket through the production adapters). vitest.config.ts
 * pins graphql to the build plain Node loads, so validation errors are classified as in
 * production.
 */
import { request } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { Redis } from 'ioredis';
import { gql, wsClient, wsCollect, type GqlResponse } from '../support/clients.ts';
import { startPrivateRedis, type PrivateRedis } from '../../harness/private-redis.ts';
import { dropPrefix, startApi, uniquePrefix, type RunningApi } from '../../harness/stack.ts';
import { hashApiKey } from '../../server/auth.ts';
import { RateLimiter } from '../../core/api/rate-limiter.ts';
import { createRedis } from '../../core/redis/connection.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('limits');

// Small limits, so that valid queries of this schema can pass or cross each of them.
const LIMITS = {
  BATCHLINE_MAX_DEPTH: '3',
  BATCHLINE_MAX_ALIASES: '3',
  BATCHLINE_MAX_TOKENS: '200',
  BATCHLINE_MAX_COST: '100',
  BATCHLINE_MAX_BODY_BYTES: '200000',
};

/** An API replica in this process, on a free port. */
const serve = (p: string, env: Record<string, string>): Promise<RunningApi> => startApi({ redisUrl, prefix: p, env });

let api: RunningApi;
let locked: RunningApi;

beforeAll(async () => {
  // `locked` also lifts the token limit, so that documents deep enough to exhaust the parser's stack get through to it.
  [api, locked] = await Promise.all([
    serve(prefix, LIMITS),
    serve(prefix, { BATCHLINE_INTROSPECTION: 'false', BATCHLINE_GRAPHIQL: 'false', BATCHLINE_MAX_TOKENS: '10000000' }),
  ]);
});

afterAll(async () => {
  await Promise.all([api?.close(), locked?.close()]);
  await dropPrefix(redisUrl, prefix);
});

type Body = GqlResponse['body'];
const codeOf = (body: Body | undefined) => body?.errors?.[0]?.extensions?.code;

const aliases = (n: number) => `{ ${Array.from({ length: n }, (_, i) => `a${i}: __typename`).join(' ')} }`;
const OVER = {
  depth: [`{ model(name: "name-gender") { versions { inputs { name } } } }`, /depth limit of 3 exceeded, found 4/],
  aliases: [aliases(4), /Aliases limit of 3 exceeded, found 4/],
  // Aliases of a real field count the same.
  fieldAliases: [`{ a: models { name } b: models { name } c: models { name } d: models { name } }`, /Aliases limit of 3 exceeded/],
  tokens: [`{ ${Array.from({ length: 200 }, () => '__typename').join(' ')} }`, /Token limit of 200 exceeded/],
  // cost = 2 (object) + 1.5 per scalar field below it: 70 fields -> 107 > 100.
  cost: [`{ models { ${Array.from({ length: 70 }, () => 'name').join(' ')} } }`, /Cost limit of 100 exceeded, found 107/],
  // A fragment used shallow first, then deeper, does not hide the depth: the 2025 fragment-cache
  // bypass of graphql-armor's max-depth (fixed by 2.4.2, installed here).
  fragmentDepth: [
    `{ models { ...MV } model(name: "name-gender") { versions { ...MV } } } fragment MV on ModelVersion { inputs { name } }`,
    /depth limit of 3 exceeded, found 4/,
  ],
} as const;
const UNDER = {
  depth: `{ models { inputs { name } } }`,
  // Fragment spreads are not levels of their own.
  fragments: `{ models { ...MV } } fragment MV on ModelVersion { inputs { ...T } } fragment T on TensorSpec { name }`,
  aliases: aliases(3),
  // 182 tokens, cost 70.
  tokens: `{ ${Array.from({ length: 20 }, () => 'model(name: "name-gender") { name }').join(' ')} }`,
  cost: `{ models { ${Array.from({ length: 60 }, () => 'name').join(' ')} } }`,
};

describe('query limits over HTTP', () => {
  for (const [name, [query, message]] of Object.entries(OVER)) {
    it(`${name}: 400 GRAPHQL_VALIDATION_FAILED, not run`, async () => {
      const r = await gql(api.url, query);
      expect(r.status).toBe(400);
      expect(codeOf(r.body)).toBe('GRAPHQL_VALIDATION_FAILED');
      expect(r.body.errors!.map((e) => e.message).join(' | ')).toMatch(message);
      expect(r.body.data).toBeUndefined();
    });
  }

  it('queries within every limit run', async () => {
    for (const query of Object.values(UNDER)) {
      const r = await gql(api.url, query);
      expect(r.status, query.slice(0, 60)).toBe(200);
      expect(r.body.errors).toBeUndefined();
    }
  });

  it('400 whatever the Accept header, and the same over GET and SSE', async () => {
    for (const accept of ['application/json', 'application/graphql-response+json', '*/*']) {
      const r = await fetch(api.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept },
        body: JSON.stringify({ query: OVER.aliases[0] }),
      });
      expect(r.status, accept).toBe(400);
    }
    const get = await fetch(`${api.url}?query=${encodeURIComponent(OVER.depth[0])}`, { headers: { accept: 'application/json' } });
    expect(get.status).toBe(400);
    expect(codeOf((await get.json()) as Body)).toBe('GRAPHQL_VALIDATION_FAILED');
    const sse = await fetch(api.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({
        query: `subscription { ${Array.from({ length: 4 }, (_, i) => `a${i}: predictionResult(id: "x") { status }`).join(' ')} }`,
      }),
    });
    expect(sse.status).toBe(400);
    expect(await sse.text()).toMatch(/GRAPHQL_VALIDATION_FAILED/);
  });

  it('introspection has depth and cost bounds of its own: what tools send passes, a deeper one is refused', async () => {
    // Deeper than this file's maxDepth of 3, well within introspection's 15.
    const usual = '{ __schema { types { name fields { name type { name ofType { name ofType { name } } } } } } }';
    const r = await gql<{ __schema: { types: unknown[] } }>(api.url, usual);
    expect(r.status).toBe(200);
    expect(r.body.data!.__schema.types.length).toBeGreaterThan(10);
    const hostile = `{ __schema { types { fields { type { ${'ofType { '.repeat(30)}name${' }'.repeat(30)} } } } } }`;
    const refused = await gql(api.url, hostile);
    expect(refused.status).toBe(400);
    expect(codeOf(refused.body)).toBe('GRAPHQL_VALIDATION_FAILED');
    expect(refused.body.errors![0].message).toBe('Query depth limit of 15 exceeded, found 35.');
  });

  it('field suggestions are hidden', async () => {
    const r = await gql(api.url, '{ model(name: "name-gender") { versionz { name } } }');
    expect(r.status).toBe(400);
    expect(r.body.errors![0].message).not.toMatch(/Did you mean/);
    expect(r.body.errors![0].message).toMatch(/Suggestion hidden|Cannot query field/);
  });
});

describe('malformed requests are 4xx, never 500', () => {
  it('a body without Content-Length (chunked) over http.maxBodyBytes: 413 PAYLOAD_TOO_LARGE', async () => {
    const u = new URL(api.url);
    const send = (size: number) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request(
          {
            host: u.hostname,
            port: u.port,
            path: u.pathname,
            method: 'POST',
            headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
          },
          (res) => {
            let body = '';
            res.on('data', (d: Buffer) => (body += d.toString()));
            res.on('end', () => resolve({ status: res.statusCode!, body }));
          },
        );
        req.on('error', reject);
        const text = JSON.stringify({ query: '{ __typename }', variables: { pad: 'x'.repeat(size) } });
        for (let i = 0; i < text.length; i += 16_384) req.write(text.slice(i, i + 16_384));
        req.end();
      });
    expect((await send(1000)).status).toBe(200);
    const over = await send(250_000);
    expect(over.status).toBe(413);
    expect(codeOf(JSON.parse(over.body) as Body)).toBe('PAYLOAD_TOO_LARGE');
  });

  it('after a chunked body over the limit, the 413 says Connection: close and the server ends the connection', async () => {
    const u = new URL(api.url);
    const socket = connect(Number(u.port), u.hostname);
    let data = '';
    socket.on('data', (d: Buffer) => (data += d.toString('latin1')));
    socket.on('error', () => {});
    const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write(
      `POST ${u.pathname} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n`,
    );
    const chunk = `{"query":"{ __typename }","variables":{"pad":"${'x'.repeat(16_000)}`;
    // Over the 200 KB limit, and never finished: a client still uploading when the 413 comes.
    for (let i = 0; i < 16; i++) socket.write(`${Buffer.byteLength(chunk).toString(16)}\r\n${chunk}\r\n`);
    await ended;
    expect(data).toMatch(/^HTTP\/1\.1 413/);
    expect(data.toLowerCase()).toContain('connection: close');
    expect(data).toContain('PAYLOAD_TOO_LARGE');
  });

  it('GET and form parameters that are not JSON: 400 BAD_USER_INPUT', async () => {
    for (const params of ['variables=notjson', 'extensions=%7B', 'variables=%5B1']) {
      const r = await fetch(`${api.url}?query=${encodeURIComponent('{ __typename }')}&${params}`, {
        headers: { accept: 'application/json' },
      });
      expect(r.status, params).toBe(400);
      expect(codeOf((await r.json()) as Body)).toBe('BAD_USER_INPUT');
    }
    const form = await fetch(api.url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'query=%7B__typename%7D&variables=%ZZ',
    });
    expect(form.status).toBe(400);
  });

  it('a document nested deeper than the parser’s stack: 400 GRAPHQL_PARSE_FAILED, over HTTP and WebSocket', async () => {
    const deep = [
      `{ ${'a { '.repeat(20_000)}b${' }'.repeat(20_000)} }`,
      `{ predict(model: "x", input: { features: ${'['.repeat(20_000)}1${']'.repeat(20_000)} }) { label } }`,
    ];
    for (const query of deep) {
      const r = await gql(locked.url, query);
      expect(r.status).toBe(400);
      expect(codeOf(r.body)).toBe('GRAPHQL_PARSE_FAILED');
      expect(r.body.errors![0].message).toMatch(/nested too deeply/);
      const client = wsClient(locked.ws);
      try {
        const w = await wsCollect(client, query, {}).catch((e: unknown) => e);
        expect(JSON.stringify(w)).toMatch(/GRAPHQL_PARSE_FAILED/);
      } finally {
        await client.dispose();
      }
    }
    expect((await fetch(locked.url.replace('/graphql', '/health'))).status).toBe(200);
  });
});

describe('query limits over WebSocket (yoga.getEnveloped applies the same plugins)', () => {
  let client: Client;
  beforeAll(() => {
    client = wsClient(api.ws);
  });
  afterAll(() => client?.dispose());

  const wsErrors = async (query: string): Promise<Body['errors']> => {
    const r = await wsCollect(client, query, {}).then(
      (events) => events,
      (e: unknown) => e,
    );
    if (Array.isArray(r) && r.length && 'message' in r[0]) return r as Body['errors'];
    if (Array.isArray(r)) return (r as Body[])[0]?.errors;
    throw new Error(`socket closed: ${JSON.stringify(r)}`);
  };

  for (const [name, [query, message]] of Object.entries(OVER)) {
    it(`${name}: an error message with the code; the connection stays usable`, async () => {
      const errors = await wsErrors(query);
      expect(errors?.[0]?.extensions?.code).toBe('GRAPHQL_VALIDATION_FAILED');
      expect(errors!.map((e) => e.message).join(' | ')).toMatch(message);
    });
  }

  it('and within the limits, the same connection answers', async () => {
    const events = await wsCollect(client, UNDER.aliases, {});
    expect(events[0].data).toEqual({ a0: 'Query', a1: 'Query', a2: 'Query' });
  });
});

describe('introspection and GraphiQL switched off', () => {
  it('introspection answers 400, __schema and __type alike', async () => {
    for (const query of ['{ __schema { queryType { name } } }', '{ __type(name: "Query") { name } }']) {
      const r = await gql(locked.url, query);
      expect(r.status).toBe(400);
      expect(codeOf(r.body)).toBe('GRAPHQL_VALIDATION_FAILED');
      expect(r.body.errors![0].message).toMatch(/introspection/i);
    }
    // Over WebSocket too.
    const client = wsClient(locked.ws);
    try {
      const r = await wsCollect(client, '{ __schema { queryType { name } } }', {}).catch((e: unknown) => e);
      expect(JSON.stringify(r)).toMatch(/introspection/i);
    } finally {
      await client.dispose();
    }
    // The API still works without it.
    expect((await gql(locked.url, '{ models { name } }')).status).toBe(200);
  });

  it('GraphiQL is not served to a browser', async () => {
    const res = await fetch(locked.url, { headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } });
    const text = await res.text();
    expect(res.headers.get('content-type') ?? '').not.toMatch(/text\/html/);
    expect(text).not.toMatch(/graphiql/i);
    expect(res.status).toBeGreaterThanOrEqual(400);
  });

  it('with the defaults, both are on (the test above is not vacuous)', async () => {
    const res = await fetch(api.url, { headers: { accept: 'text/html' } });
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    expect(await res.text()).toMatch(/graphiql/i);
    expect((await gql(api.url, '{ __schema { queryType { name } } }')).status).toBe(200);
  });
});

describe('rate limits', () => {
  const KEYS = { a: 'key-a-3c1f7e', b: 'key-b-9d2a4b' };
  const env = {
    BATCHLINE_AUTH: 'true',
    BATCHLINE_API_KEYS: `a:${hashApiKey(KEYS.a)}:predict:*;b:${hashApiKey(KEYS.b)}:predict:*`,
    // One token every 50 s: once the burst is spent, the bucket stays empty for the test.
    BATCHLINE_RATE_LIMIT_PER_SECOND: '0.02',
    BATCHLINE_RATE_LIMIT_BURST: '5',
    // The limiter fails open after this wait; a stalled test machine must not turn a 429 into a 200.
    BATCHLINE_RATE_LIMIT_TIMEOUT_MS: '10000',
  };
  const rlPrefix = uniquePrefix('ratelimit');
  let one: RunningApi;
  let two: RunningApi;

  beforeAll(async () => {
    // Two replicas on one Redis.
    [one, two] = await Promise.all([serve(rlPrefix, env), serve(rlPrefix, env)]);
  });
  afterAll(async () => {
    await Promise.all([one?.close(), two?.close()]);
    await dropPrefix(redisUrl, rlPrefix);
  });

  const hit = (url: string, k: string) => gql(url, '{ __typename }', {}, { 'x-api-key': k });

  it('429 RATE_LIMITED with Retry-After once a key has spent its burst; other keys and replicas agree', async () => {
    const statuses: number[] = [];
    let refused: Awaited<ReturnType<typeof hit>> | undefined;
    for (let i = 0; i < 50 && !refused; i++) {
      const r = await hit(one.url, KEYS.a);
      statuses.push(r.status);
      if (r.status === 429) refused = r;
    }
    expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200]);
    expect(refused).toBeDefined();
    expect(codeOf(refused!.body)).toBe('RATE_LIMITED');
    const retryAfter = refused!.headers.get('retry-after');
    expect(retryAfter).toMatch(/^[1-9]\d*$/);
    expect(Number(retryAfter)).toBeLessThanOrEqual(50);
    expect(refused!.body.errors![0].extensions!.retryAfter).toBe(Number(retryAfter));

    // The other replica reads the same bucket.
    const other = await hit(two.url, KEYS.a);
    expect(other.status).toBe(429);
    // Another key is not affected, on either replica.
    expect((await hit(one.url, KEYS.b)).status).toBe(200);
    expect((await hit(two.url, KEYS.b)).status).toBe(200);
    // The bucket is one Redis hash per key name, never the key itself.
    const r = new Redis(redisUrl);
    try {
      const keys = await r.keys(`${rlPrefix}:ratelimit:*`);
      expect(keys.sort()).toEqual([`${rlPrefix}:ratelimit:key:a`, `${rlPrefix}:ratelimit:key:b`]);
      expect(await r.pttl(`${rlPrefix}:ratelimit:key:a`)).toBeGreaterThan(0);
    } finally {
      r.disconnect();
    }
  });

  it('over SSE and WebSocket the limited key is refused with the same code', async () => {
    const sse = await fetch(one.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'x-api-key': KEYS.a },
      body: JSON.stringify({ query: 'subscription { predictionResult(id: "x") { status } }' }),
    });
    expect(sse.status).toBe(429);
    expect(sse.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
    const client = createClient({
      url: one.ws,
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: true,
      connectionParams: { apiKey: KEYS.a },
    });
    try {
      const r = await wsCollect(client, '{ __typename }', {}).catch((e: unknown) => e);
      expect(JSON.stringify(r)).toMatch(/RATE_LIMITED/);
    } finally {
      await client.dispose();
    }
  });

  it('unauthenticated requests draw from their address’s bucket, so key guessing is limited too', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 50 && !statuses.includes(429); i++) statuses.push((await hit(one.url, `guess-${i}`)).status);
    expect(statuses.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
    expect(statuses.at(-1)).toBe(429);
  });
});

describe('the rate limiter fails open', () => {
  let redis: PrivateRedis;
  let down: RunningApi;
  beforeAll(async () => {
    redis = await startPrivateRedis();
    down = await startApi({ redisUrl: redis.url, prefix, env: { BATCHLINE_RATE_LIMIT_PER_SECOND: '1', BATCHLINE_RATE_LIMIT_BURST: '1' } });
    await redis.stop();
  });
  afterAll(async () => {
    // Closing the API waits on its Redis connections: bring Redis back, and wait until the
    // API is ready again (as errors.test.ts does), before closing.
    await redis?.start();
    if (down)
      await until(async () => (await fetch(down.url.replace('/graphql', '/ready'))).status === 200, 'the API ready again', 30_000, 100);
    await down?.close();
    await redis?.stop();
  });

  it('with Redis down, requests are not refused by the limiter: they get their own 503', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await gql(down.url, 'mutation { submitPrediction(model: "name-gender", input: { text: "Ann" }) { id } }');
      expect(r.status).toBe(503);
      expect(codeOf(r.body)).toBe('SERVICE_UNAVAILABLE');
    }
    // Queries that need no Redis still answer.
    expect((await gql(down.url, '{ __typename }')).status).toBe(200);
  });

  it('RateLimiter.take lets the request through when Redis does not answer', async () => {
    const r = createRedis(redis.url, 'producer');
    try {
      const limiter = new RateLimiter({ redis: r, prefix, ratePerSecond: 1, burst: 1 });
      const decisions = await Promise.all([limiter.take('ip:x'), limiter.take('ip:x'), limiter.take('ip:x')]);
      expect(decisions.every((d) => d.allowed)).toBe(true);
    } finally {
      r.disconnect();
    }
  });
});
