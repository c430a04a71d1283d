/**
 * API keys: 401 UNAUTHENTICATED without a key or with an unknown one (header, Bearer,
 * WebSocket close 4401), 403 FORBIDDEN for a key without the model's scope on every path
 * (predict, submit, poll, subscribe over SSE and WebSocket) and without `admin`; a valid
 * key works over HTTP, SSE and WebSocket. /health, /ready and /metrics stay open. Keys are
 * configured hashed, malformed configuration stops the server, and keys never reach logs.
 *
 * The API runs in this process (real HTTP and WebSocket on a free port). A worker process is
 * started only for the tests whose answers cross processes: a result a worker computed,
 * delivered to a valid key and kept from another.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { gql, wsCollect, type GqlResponse } from '../support/clients.ts';
import { CLI, REPO_MODELS, configFor, startWorker, uniquePrefix, type Child } from '../../harness/stack.ts';
import { createAuthenticator, hashApiKey, parseApiKeys } from '../../server/auth.ts';
import { ANONYMOUS, authorize, type Principal } from '../../core/api/authorization.ts';
import { DEFAULT_CONFIG } from '../../core/config/settings.ts';
import { createApiServer } from '../../server/api-server.ts';
import { createLogger, REDACTED } from '../../core/telemetry/logger.ts';
import { pino } from 'pino';
import { ServingError } from '../../core/errors/registry.ts';
import { useStack } from '../support/use-stack.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('auth');

const KEYS = {
  alice: 'alice-4f1c9d0b7e2a', // predict:*
  bob: 'bob-9a8b7c6d5e4f', // predict:mlp-bench only
  ops: 'ops-0123456789ab', // admin only
};
const API_KEYS = [
  `alice:${hashApiKey(KEYS.alice)}:predict:*`,
  `bob:${hashApiKey(KEYS.bob)}:predict:mlp-bench`,
  `ops:${hashApiKey(KEYS.ops)}:admin`,
].join(';');
const opts = { redisUrl, prefix, env: { BATCHLINE_AUTH: 'true', BATCHLINE_API_KEYS: API_KEYS } };

// The API alone; the worker joins in the describe block that needs it.
const stack = useStack(opts, []);

const PREDICT = 'query($m: String!, $i: PredictionInput!) { predict(model: $m, input: $i) { label } }';
const SUBMIT = 'mutation($m: String!, $i: PredictionInput!) { submitPrediction(model: $m, input: $i) { id status } }';
const POLL = 'query($id: ID!) { prediction(id: $id) { status result { label } } }';
const RESULT = 'subscription($id: ID!) { predictionResult(id: $id) { status result { label } } }';
const key = (k: string) => ({ 'x-api-key': k });

type Body = GqlResponse['body'];
const codeOf = (body: Body) => body.errors?.[0]?.extensions?.code;

/** SSE subscription with headers; every `next` payload until `complete`. */
async function sse(
  url: string,
  query: string,
  variables: Record<string, unknown>,
  headers: Record<string, string>,
): Promise<{ status: number; events: Body[] }> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), 20_000);
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...headers },
      body: JSON.stringify({ query, variables }),
      signal: ctrl.signal,
    });
    const text = await res.text();
    const events = text
      .split('\n\n')
      .filter((block) => /^event: next$/m.test(block))
      .map((block) => JSON.parse(/^data: (.*)$/m.exec(block)![1]) as Body);
    return { status: res.status, events };
  } finally {
    clearTimeout(timer);
  }
}

/** A graphql-ws client whose upgrade request carries `headers`, or whose connection_init carries `connectionParams`. */
function ws(url: string, o: { headers?: Record<string, string>; connectionParams?: Record<string, unknown> } = {}): Client {
  const headers = o.headers;
  const impl = headers
    ? class extends WebSocket {
        constructor(address: string, protocols?: string | string[]) {
          super(address, protocols, { headers });
        }
      }
    : WebSocket;
  return createClient({ url, webSocketImpl: impl, retryAttempts: 0, lazy: true, connectionParams: o.connectionParams });
}

async function withClient<T>(client: Client, fn: (c: Client) => Promise<T>): Promise<T> {
  try {
    return await fn(client);
  } finally {
    await client.dispose();
  }
}

async function submitAs(k: string, model = 'name-gender', text = 'Maria'): Promise<string> {
  const r = await gql<{ submitPrediction: { id: string } }>(
    stack.api.url,
    SUBMIT,
    { m: model, i: model === 'name-gender' ? { text } : { features: Array.from({ length: 512 }, () => 0.5) } },
    key(k),
  );
  expect(r.status).toBe(200);
  return r.body.data!.submitPrediction.id;
}

describe('401 UNAUTHENTICATED', () => {
  it('without a key, for every operation, introspection and __typename included', async () => {
    for (const [query, vars] of [
      [PREDICT, { m: 'name-gender', i: { text: 'Ann' } }],
      [SUBMIT, { m: 'name-gender', i: { text: 'Ann' } }],
      ['{ models { name } }', {}],
      ['{ __schema { queryType { name } } }', {}],
      ['{ __typename }', {}],
      ['{ this is not graphql', {}],
    ] as const) {
      const r = await gql(stack.api.url, query, vars);
      expect(r.status).toBe(401);
      expect(codeOf(r.body)).toBe('UNAUTHENTICATED');
      expect(r.body.data).toBeUndefined();
    }
  });

  it('with an unknown key, an empty key, a hash instead of the key, or a key of the wrong case', async () => {
    for (const headers of [
      key('nope'),
      key(''),
      key(hashApiKey(KEYS.alice)),
      key(KEYS.alice.toUpperCase()),
      { authorization: 'Bearer nope' },
      { authorization: KEYS.alice },
      { authorization: `Basic ${KEYS.alice}` },
    ]) {
      const r = await gql(stack.api.url, '{ models { name } }', {}, headers);
      expect(r.status, JSON.stringify(headers)).toBe(401);
      expect(codeOf(r.body)).toBe('UNAUTHENTICATED');
    }
  });

  it('over GET and over SSE too', async () => {
    const get = await fetch(`${stack.api.url}?query=${encodeURIComponent('{ models { name } }')}`, {
      headers: { accept: 'application/json' },
    });
    expect(get.status).toBe(401);
    const s = await sse(stack.api.url, RESULT, { id: 'whatever' }, {});
    expect(s.status).toBe(401);
    expect(codeOf(s.events[0])).toBe('UNAUTHENTICATED');
  });

  it('WebSocket connections without a key or with an unknown one are closed with 4401', async () => {
    for (const client of [
      ws(stack.api.ws),
      ws(stack.api.ws, { connectionParams: { apiKey: 'nope' } }),
      ws(stack.api.ws, { headers: key('nope') }),
      ws(stack.api.ws, { connectionParams: { headers: { authorization: 'Bearer nope' } } }),
    ]) {
      const closed = await withClient(client, (c) =>
        wsCollect(c, '{ __typename }', {}).then(
          () => undefined,
          (e: unknown) => e,
        ),
      );
      expect((closed as { code?: number }).code).toBe(4401);
    }
  });

  it('/health, /ready and /metrics stay open', async () => {
    const base = stack.api.url.replace('/graphql', '');
    for (const path of ['/health', '/ready', '/metrics']) expect((await fetch(base + path)).status, path).toBe(200);
  });
});

describe('a valid key', () => {
  it('lists models whatever its scopes (any authenticated key)', async () => {
    for (const k of [KEYS.alice, KEYS.bob, KEYS.ops]) {
      const r = await gql<{ models: { name: string }[] }>(stack.api.url, '{ models { name } }', {}, key(k));
      expect(r.status).toBe(200);
      expect(r.body.data!.models.map((m) => m.name).sort()).toEqual(['mlp-bench', 'name-gender', 'spam-mlp']);
    }
  });
});

describe('403 FORBIDDEN for a key scoped to another model', () => {
  it('predict and submitPrediction', async () => {
    for (const [query, k] of [
      [PREDICT, KEYS.bob],
      [SUBMIT, KEYS.bob],
      [PREDICT, KEYS.ops],
    ] as const) {
      const r = await gql(stack.api.url, query, { m: 'name-gender', i: { text: 'Ann' } }, key(k));
      expect(r.status).toBe(403);
      expect(codeOf(r.body)).toBe('FORBIDDEN');
      expect(r.body.errors![0].message).toMatch(/may not use model 'name-gender'/);
    }
    // Its own model is allowed: the ticket comes back (no gpu worker runs here; it just waits).
    const ok = await gql(stack.api.url, SUBMIT, { m: 'mlp-bench', i: { features: Array.from({ length: 512 }, () => 0.1) } }, key(KEYS.bob));
    expect(ok.status).toBe(200);
  });

  it('a model it may not use is refused before the model is even looked up (no existence leak)', async () => {
    const r = await gql(stack.api.url, PREDICT, { m: 'no-such-model', i: { text: 'Ann' } }, key(KEYS.bob));
    expect(r.status).toBe(403);
    const wild = await gql(stack.api.url, PREDICT, { m: 'no-such-model', i: { text: 'Ann' } }, key(KEYS.alice));
    expect(codeOf(wild.body)).toBe('MODEL_NOT_FOUND');
  });
});

describe('with a worker: answers reach a valid key, and only it', () => {
  let worker: Child;
  beforeAll(async () => {
    worker = await startWorker('cpu', opts);
  });
  afterAll(async () => {
    await worker?.stop();
  });

  it('works in the configured header and as a Bearer token', async () => {
    for (const headers of [key(KEYS.alice), { authorization: `Bearer ${KEYS.alice}` }, { authorization: `bearer ${KEYS.alice}` }]) {
      const r = await gql<{ predict: { label: string } }>(stack.api.url, PREDICT, { m: 'name-gender', i: { text: 'Maria' } }, headers);
      expect(r.status).toBe(200);
      expect(r.body.data!.predict.label).toBe('female');
    }
  });

  it('works over SSE: submit, then the result by subscription and by polling', async () => {
    const id = await submitAs(KEYS.alice, 'name-gender', 'John');
    const s = await sse(stack.api.url, RESULT, { id }, key(KEYS.alice));
    expect(s.status).toBe(200);
    expect(s.events[0].data).toMatchObject({ predictionResult: { status: 'COMPLETED', result: { label: 'male' } } });
    const p = await gql<{ prediction: { status: string } }>(stack.api.url, POLL, { id }, key(KEYS.alice));
    expect(p.body.data!.prediction.status).toBe('COMPLETED');
  });

  it('works over WebSocket from connection_init ({ apiKey } or { headers }) or from the upgrade request', async () => {
    for (const client of [
      ws(stack.api.ws, { connectionParams: { apiKey: KEYS.alice } }),
      ws(stack.api.ws, { connectionParams: { headers: key(KEYS.alice) } }),
      ws(stack.api.ws, { connectionParams: { headers: { Authorization: `Bearer ${KEYS.alice}` } } }),
      ws(stack.api.ws, { headers: key(KEYS.alice) }),
    ]) {
      const id = await submitAs(KEYS.alice, 'name-gender', 'Elizabeth');
      const events = await withClient(client, (c) => wsCollect(c, RESULT, { id }));
      expect(events[0].data).toMatchObject({ predictionResult: { status: 'COMPLETED', result: { label: 'female' } } });
    }
  });

  it('polling, and subscribing over SSE and WebSocket, to another model’s prediction', async () => {
    const id = await submitAs(KEYS.alice, 'name-gender', 'Robert');
    const poll = await gql(stack.api.url, POLL, { id }, key(KEYS.bob));
    expect(poll.status).toBe(403);
    expect(codeOf(poll.body)).toBe('FORBIDDEN');

    // Over SSE the refusal travels in the stream (status 200), where graphql-sse's client reads it.
    const s = await sse(stack.api.url, RESULT, { id }, key(KEYS.bob));
    expect(s.status).toBe(200);
    expect(codeOf(s.events[0])).toBe('FORBIDDEN');
    expect(s.events[0].data ?? null).toBeNull();

    const result = await withClient(ws(stack.api.ws, { connectionParams: { apiKey: KEYS.bob } }), (c) =>
      wsCollect(c, RESULT, { id }).then(
        (events) => events,
        (e: unknown) => e,
      ),
    );
    const errors = Array.isArray(result) && 'message' in (result[0] ?? {}) ? (result as Body['errors'])! : (result as Body[])[0]?.errors;
    expect(errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(JSON.stringify(result)).not.toMatch(/Robert|"label"/);
  });

  it('the allowed key still reads it (the forbidden reads did not consume it)', async () => {
    const id = await submitAs(KEYS.alice, 'name-gender', 'Sarah');
    expect(codeOf((await sse(stack.api.url, RESULT, { id }, key(KEYS.bob))).events[0])).toBe('FORBIDDEN');
    const s = await sse(stack.api.url, RESULT, { id }, key(KEYS.alice));
    expect(s.events[0].data).toMatchObject({ predictionResult: { status: 'COMPLETED' } });
  });
});

describe('authorize()', () => {
  const alice: Principal = { name: 'alice', scopes: ['predict:*'] };
  const bob: Principal = { name: 'bob', scopes: ['predict:mlp-bench'] };
  const ops: Principal = { name: 'ops', scopes: ['admin'] };
  const forbidden = (fn: () => void) => {
    try {
      fn();
    } catch (e) {
      return e instanceof ServingError ? e.code : String(e);
    }
    return 'allowed';
  };

  it('admin operations need the admin scope: 403 otherwise', () => {
    expect(forbidden(() => authorize({ principal: alice }, { admin: true }))).toBe('FORBIDDEN');
    expect(forbidden(() => authorize({ principal: bob }, { admin: true }))).toBe('FORBIDDEN');
    expect(forbidden(() => authorize({ principal: ops }, { admin: true }))).toBe('allowed');
    expect(forbidden(() => authorize({ principal: ANONYMOUS }, { admin: true }))).toBe('allowed');
    expect(new ServingError('FORBIDDEN').status).toBe(403);
  });

  it('models need predict:<model> or predict:*; no principal is 401', () => {
    expect(forbidden(() => authorize({ principal: bob }, { model: 'mlp-bench' }))).toBe('allowed');
    expect(forbidden(() => authorize({ principal: bob }, { model: 'name-gender' }))).toBe('FORBIDDEN');
    expect(forbidden(() => authorize({ principal: alice }, { model: 'anything' }))).toBe('allowed');
    expect(forbidden(() => authorize({ principal: ops }, { model: 'mlp-bench' }))).toBe('FORBIDDEN');
    expect(forbidden(() => authorize({ principal: ops }, { model: 'mlp-bench', admin: true }))).toBe('FORBIDDEN');
    expect(forbidden(() => authorize({}, {}))).toBe('UNAUTHENTICATED');
  });
});

describe('configuration', () => {
  const base = { enabled: true, keys: API_KEYS, header: 'x-api-key' };

  it('hashes keys with sha256; the CLI prints the same hash, from an argument or stdin', async () => {
    expect(hashApiKey('s3cret')).toBe(createHash('sha256').update('s3cret').digest('hex'));
    const run = (args: string[], input?: string) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.stderr.on('data', (d: Buffer) => (out += d.toString()));
        p.on('exit', (code) => resolve({ code, out }));
        p.stdin.end(input ?? '');
      });
    // Three CLI processes at once: each is independent, and each costs a Node start.
    const [fromArgument, fromStdin, unknown] = await Promise.all([
      run(['auth', 'hash-key', 's3cret']),
      run(['auth', 'hash-key'], 's3cret\n'),
      run(['auth', 'nope']),
    ]);
    expect(fromArgument).toEqual({ code: 0, out: `${hashApiKey('s3cret')}\n` });
    expect(fromStdin).toEqual({ code: 0, out: `${hashApiKey('s3cret')}\n` });
    expect(unknown.code).toBe(2);
  });

  it('parses names, hashes and scopes, including model scopes', () => {
    const entries = parseApiKeys(` a:${'A'.repeat(64)}:predict:m-1,predict:m.2 ; b:${'b'.repeat(64)}:admin,predict:* ;`);
    expect(entries.map((e) => [e.name, e.principal.scopes])).toEqual([
      ['a', ['predict:m-1', 'predict:m.2']],
      ['b', ['admin', 'predict:*']],
    ]);
  });

  it('rejects malformed keys at startup, with a clear message that shows no hash', async () => {
    const h = hashApiKey('x');
    for (const [keys, message] of [
      ['alice', /must be name:sha256hex:scope/],
      [`alice:${h}`, /must be name:sha256hex:scope/],
      [`alice:1234:predict:*`, /64 hex digits/],
      [`alice:${h}:write`, /unknown scope 'write'/],
      [`alice:${h}:predict:`, /unknown scope/],
      [`al ice:${h}:admin`, /the name must be/],
      [`a:${h}:admin;a:${hashApiKey('y')}:admin`, /'a' is given twice/],
      [`a:${h}:admin;b:${h}:admin`, /same key hash is given twice/],
    ] as const) {
      let error = '';
      try {
        createAuthenticator({ ...base, keys });
      } catch (e) {
        error = (e as Error).message;
      }
      expect(error, keys).toMatch(message);
      expect(error).not.toContain(h);
    }
    expect(() => createAuthenticator({ ...base, keys: '' })).toThrow(/holds no key/);
    expect(() => createAuthenticator({ ...base, header: 'bad header' })).toThrow(/auth.header/);
    // The server itself refuses to start.
    const config = {
      ...DEFAULT_CONFIG,
      redis: { url: redisUrl, prefix },
      models: { ...DEFAULT_CONFIG.models, repository: REPO_MODELS },
      auth: { ...base, keys: 'broken' },
    };
    await expect(createApiServer({ config, logger: createLogger({ ...DEFAULT_CONFIG.log, level: 'silent' }) })).rejects.toThrow(
      /auth.keys entry 1/,
    );
  });

  it('reads the configured header, and Bearer; auth off gives everyone the anonymous all-access principal', () => {
    const auth = createAuthenticator({ ...base, header: 'X-Token' });
    expect(auth.authenticate(auth.keyFromHeaders({ 'x-token': KEYS.alice }))?.name).toBe('alice');
    expect(auth.authenticate(auth.keyFromHeaders(new Headers({ authorization: `Bearer ${KEYS.bob}` })))?.name).toBe('bob');
    expect(auth.authenticate(auth.keyFromHeaders({ 'x-api-key': KEYS.alice }))).toBeUndefined();
    expect(auth.authenticate(auth.keyFromConnectionParams({ headers: { 'X-Token': KEYS.ops } }))?.name).toBe('ops');
    const off = createAuthenticator({ enabled: false, keys: '', header: 'x-api-key' });
    expect(off.authenticate(undefined)).toBe(ANONYMOUS);
    expect(off.authenticate('garbage')).toBe(ANONYMOUS);
  });
});

describe('keys never reach the logs', () => {
  it('at trace level, through 200s, 401s, 403s and WebSocket connections', async () => {
    // What `batchline serve` writes to stdout, read from the logger it writes with.
    let out = '';
    const config = configFor({ ...opts, env: { ...opts.env, BATCHLINE_LOG_LEVEL: 'trace' } });
    const api = await createApiServer({
      config,
      logger: createLogger(config.log, { process: 'api' }, { write: (s: string) => void (out += s) }),
    });
    const port = await api.listen(0, '127.0.0.1');
    try {
      const url = `http://127.0.0.1:${port}/graphql`;
      const wrong = 'wrong-key-7d3e9f';
      await gql(url, PREDICT, { m: 'name-gender', i: { text: 'Maria' } }, key(KEYS.alice));
      await gql(url, PREDICT, { m: 'name-gender', i: { text: 'Maria' } }, { authorization: `Bearer ${KEYS.bob}` });
      await gql(url, '{ nope }', {}, key(KEYS.alice));
      await gql(url, '{ models { name } }', {}, key(wrong));
      await withClient(ws(`ws://127.0.0.1:${port}/graphql`, { connectionParams: { apiKey: KEYS.ops } }), (c) =>
        wsCollect(c, '{ models { name } }', {}),
      );
      await withClient(ws(`ws://127.0.0.1:${port}/graphql`, { connectionParams: { apiKey: wrong } }), (c) =>
        wsCollect(c, '{ __typename }', {}).catch(() => undefined),
      );
    } finally {
      await api.close();
    }
    // Trace level logged the requests (a silent logger would pass the check below vacuously).
    expect(out).toMatch(/"msg":"request"/);
    for (const secret of [...Object.values(KEYS), 'wrong-key-7d3e9f', hashApiKey(KEYS.alice)]) expect(out).not.toContain(secret);
  });

  it('the logger redacts keys wherever a header, a connection payload or the config could carry one', () => {
    let out = '';
    const log = pino({ redact: { paths: REDACTED, censor: '[redacted]' } }, { write: (s: string) => void (out += s) });
    log.info(
      { apiKey: 'k1', req: { headers: { 'x-api-key': 'k2', authorization: 'Bearer k3' } }, request: { headers: { 'x-api-key': 'k4' } } },
      'one',
    );
    log.info(
      { connectionParams: { apiKey: 'k5', headers: { authorization: 'Bearer k6' } }, ctx: { connectionParams: { apiKey: 'k7' } } },
      'two',
    );
    log.info(
      { headers: { authorization: 'Bearer k8' }, upgrade: { headers: { 'x-api-key': 'k9' } }, config: { auth: { keys: 'a:k10:admin' } } },
      'three',
    );
    expect(out.split('\n').filter(Boolean)).toHaveLength(3);
    expect(out).not.toMatch(/k\d/);
    expect(out).toContain('[redacted]');
  });
});
