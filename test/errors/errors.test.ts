/**
 * Every error class the API decides answers with a stable `extensions.code` and the HTTP
 * status that fits, never a crash or a hang: 400 bad input, 404 unknown things, 413 too large,
 * 503 + Retry-After when Redis is down. No worker runs: nothing here crosses a process
 * (test/errors/worker-errors.test.ts has the errors a worker reports).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { gql, sseCollect, wsClient, wsCollect } from '../support/clients.ts';
import { errorModels } from '../support/model-repo.ts';
import { startPrivateRedis, type PrivateRedis } from '../../harness/private-redis.ts';
import { startApi, uniquePrefix, type RunningApi } from '../../harness/stack.ts';
import { getIntrospectionQuery } from 'graphql';
import { createClient as createSseClient } from 'graphql-sse';
import { useStack } from '../support/use-stack.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('errors');
const models = errorModels();
const opts = { redisUrl, prefix, models, env: { BATCHLINE_MAX_BODY_BYTES: '200000' } };
const stack = useStack(opts, []);

const PREDICT =
  'query($m: String!, $v: String, $i: PredictionInput!, $t: Int) { predict(model: $m, version: $v, input: $i, timeoutMs: $t) { label } }';

async function expectError(
  res: Promise<{ status: number; headers: Headers; body: { errors?: { message: string; extensions?: Record<string, unknown> }[] } }>,
  status: number,
  code: string,
  message?: RegExp,
) {
  const r = await res;
  expect(r.status).toBe(status);
  expect(r.body.errors?.[0]?.extensions?.code).toBe(code);
  if (message) expect(r.body.errors![0].message).toMatch(message);
  return r;
}

describe('400 BAD_USER_INPUT names the field and what was expected', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['wrong length', { m: 'mlp-bench', i: { features: [1, 2, 3] } }, /input\.features: expected 512 values/],
    [
      'wrong shape',
      { m: 'flex', i: { tensors: [{ name: 'x', shape: [2, 2, 1], datatype: 'FP32', data: [1, 2, 3, 4] }] } },
      /input\.tensors\[0\]\.shape: expected rank 2/,
    ],
    [
      'data not matching shape',
      { m: 'flex', i: { tensors: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data: [1, 2, 3] }] } },
      /needs 8 values, got 3/,
    ],
    [
      'wrong dtype',
      { m: 'flex', i: { tensors: [{ name: 'x', shape: [1, 4], datatype: 'INT64', data: [1, 2, 3, 4] }] } },
      /datatype: expected FP32/,
    ],
    [
      'both data and base64',
      { m: 'flex', i: { tensors: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4], base64: 'AAAAAA==' }] } },
      /input\.tensors\[0\]: give exactly one of data or base64/,
    ],
    [
      'neither data nor base64',
      { m: 'flex', i: { tensors: [{ name: 'x', shape: [1, 4], datatype: 'FP32' }] } },
      /give exactly one of data or base64/,
    ],
    [
      'base64 of the wrong length',
      { m: 'flex', i: { tensors: [{ name: 'x', shape: [1, 4], datatype: 'FP32', base64: 'AAAAAAAAAAA=' }] } },
      /input\.tensors\[0\]\.base64: 4 FP32 values need 16 bytes, got 8/,
    ],
    [
      'not base64',
      { m: 'flex', i: { tensors: [{ name: 'x', shape: [1, 4], datatype: 'FP32', base64: 'not base64!' }] } },
      /expected standard base64/,
    ],
    [
      'NaN in base64',
      {
        m: 'flex',
        i: {
          tensors: [{ name: 'x', shape: [1, 1], datatype: 'FP32', base64: Buffer.from(Float32Array.of(NaN).buffer).toString('base64') }],
        },
      },
      /input\.tensors\[0\]\.base64\[0\]: expected a finite number, got NaN/,
    ],
    [
      'unknown tensor',
      { m: 'flex', i: { tensors: [{ name: 'nope', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] } },
      /has no input 'nope'/,
    ],
    ['empty text', { m: 'name-gender', i: { text: '   ' } }, /input\.text: expected a non-empty string/],
    ['empty instances', { m: 'mlp-bench', i: { instances: [] } }, /expected at least one row/],
    ['no input form', { m: 'name-gender', i: {} }, /give one of/],
    ['two input forms', { m: 'name-gender', i: { text: 'Ann', texts: ['Bob'] } }, /give only one of text, texts/],
    ['text to a tensor model', { m: 'mlp-bench', i: { text: 'hello' } }, /takes no text/],
    [
      'too many rows',
      { m: 'name-gender', i: { texts: Array.from({ length: 300 }, () => 'Ann') } },
      /at most 256 rows per request, got 300 \(the model's maxRowsPerRequest is 256, the server's predict\.maxRows is 1024\)/,
    ],
    ['text too long', { m: 'name-gender', i: { text: 'x'.repeat(65) } }, /at most 64 characters/],
    ['bad timeout', { m: 'name-gender', i: { text: 'Ann' }, t: -5 }, /timeoutMs: expected a positive integer/],
    [
      'a value beyond FP32 in features',
      { m: 'name-gender', i: { features: [1e39, ...Array.from({ length: 1023 }, () => 0)] } },
      /input\.features\[0\]: 1e\+39 is outside the range of FP32/,
    ],
    [
      'a value beyond FP32 in a tensor',
      { m: 'flex', i: { tensors: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [0, 0, -4e38, 0] }] } },
      /input\.tensors\[0\]\.data\[2\]: -4e\+38 is outside the range of FP32/,
    ],
  ];
  for (const [name, vars, message] of cases) {
    it(name, async () => {
      const r = await expectError(gql(stack.api.url, PREDICT, vars), 400, 'BAD_USER_INPUT', message);
      // The field is named, and it is the one the message is about.
      const field = r.body.errors![0].extensions!.field;
      expect(typeof field).toBe('string');
      expect(r.body.errors![0].message.startsWith(`${field as string}: `)).toBe(true);
    });
  }

  it('NaN and Infinity cannot pass as numbers', async () => {
    await expectError(
      gql(stack.api.url, PREDICT, { m: 'mlp-bench', i: { features: ['NaN', 1, 2, 3] } }),
      400,
      'BAD_USER_INPUT',
      /Float cannot represent/,
    );
    const body = '{"query":"{ predict(model: \\"mlp-bench\\", input: { features: [1, 2, 3, Infinity] }) { label } }"}';
    const res = await fetch(stack.api.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(res.status).toBe(400);
  });

  it('a wrong type in a literal is a 400 too (not the 200 of plain GraphQL over JSON)', async () => {
    await expectError(gql(stack.api.url, '{ predict(model: "name-gender", input: { features: "x" }) { label } }'), 400, 'BAD_USER_INPUT');
  });

  it('a priority out of range is refused', async () => {
    await expectError(
      gql(stack.api.url, 'mutation { submitPrediction(model: "name-gender", input: { text: "Ann" }, priority: 11) { id } }'),
      400,
      'BAD_USER_INPUT',
      /priority/,
    );
  });

  it('a body that is not GraphQL (text/plain) is 415 with a coded error, not an empty body', async () => {
    const res = await fetch(stack.api.url, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: '{"query":"{ __typename }"}',
    });
    expect(res.status).toBe(415);
    const body = (await res.json()) as { errors: { message: string; extensions: { code: string } }[] };
    expect(body.errors[0].extensions.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    expect(body.errors[0].message).toMatch(/text\/plain.*application\/json/);
  });

  it('malformed JSON and unknown fields answer 400', async () => {
    const res = await fetch(stack.api.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"query": "{ predict(',
    });
    expect(res.status).toBe(400);
    await expectError(gql(stack.api.url, '{ nope }'), 400, 'GRAPHQL_VALIDATION_FAILED');
  });
});

describe('introspection under the default limits', () => {
  it('the standard introspection query (GraphiQL, codegen) is answered; nesting it deeper is refused', async () => {
    const r = await gql<{ __schema: { types: unknown[] } }>(
      stack.api.url,
      getIntrospectionQuery({ inputValueDeprecation: true, schemaDescription: true, specifiedByUrl: true, directiveIsRepeatable: true }),
    );
    expect(r.status).toBe(200);
    expect(r.body.data!.__schema.types.length).toBeGreaterThan(10);
    const deeper = `{ __schema { types { fields { type { ${'ofType { '.repeat(30)}name${' }'.repeat(30)} } } } } }`;
    await expectError(gql(stack.api.url, deeper), 400, 'GRAPHQL_VALIDATION_FAILED', /Query depth limit of 15 exceeded, found 35/);
  });
});

describe('404 for unknown things', () => {
  it('unknown model', () => expectError(gql(stack.api.url, PREDICT, { m: 'nope', i: { text: 'x' } }), 404, 'MODEL_NOT_FOUND'));
  it('unknown version', () =>
    expectError(gql(stack.api.url, PREDICT, { m: 'name-gender', v: '99', i: { text: 'Ann' } }), 404, 'MODEL_VERSION_NOT_FOUND'));
  it('unknown prediction id, polled', () =>
    expectError(gql(stack.api.url, '{ prediction(id: "no-such-id") { status } }'), 404, 'PREDICTION_NOT_FOUND'));
  it('unknown prediction id over graphql-sse’s own client: it reads PREDICTION_NOT_FOUND (a 404 status made it a network error)', async () => {
    const client = createSseClient({ url: stack.api.url, retryAttempts: 0 });
    try {
      const got = await new Promise<unknown>((resolve) => {
        const seen: unknown[] = [];
        client.subscribe(
          { query: 'subscription { predictionResult(id: "no-such-id") { status } }' },
          { next: (v) => void seen.push(v), error: (e) => resolve({ error: String(e) }), complete: () => resolve(seen) },
        );
      });
      expect(got).toMatchObject([{ errors: [{ extensions: { code: 'PREDICTION_NOT_FOUND' } }] }]);
    } finally {
      client.dispose();
    }
  });

  it('unknown prediction id, subscribed over SSE and WebSocket', async () => {
    const sse = await sseCollect(stack.api.url, 'subscription { predictionResult(id: "no-such-id") { status } }', {});
    expect(sse.events[0].errors![0].extensions!.code).toBe('PREDICTION_NOT_FOUND');
    const client = wsClient(stack.api.ws);
    try {
      const events = await wsCollect(client, 'subscription { predictionResult(id: "no-such-id") { status } }', {}).catch((e: unknown) => e);
      const errors = Array.isArray(events) ? events[0].errors : (events as { message: string; extensions?: Record<string, unknown> }[]);
      expect(errors![0].extensions!.code).toBe('PREDICTION_NOT_FOUND');
    } finally {
      await client.dispose();
    }
  });
});

describe('413 over the body limit', () => {
  it('413 for a body over the size limit', async () => {
    const big = Array.from({ length: 60_000 }, () => 1.2345);
    const res = await fetch(stack.api.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: PREDICT, variables: { m: 'flex', i: { features: big } } }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { errors: { extensions: { code: string } }[] }).errors[0].extensions.code).toBe('PAYLOAD_TOO_LARGE');
  });
});

describe('503 with Retry-After while Redis is unreachable', () => {
  let redis: PrivateRedis;
  let downApi: RunningApi;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    downApi = await startApi({ redisUrl: redis.url, prefix, models });
    await redis.stop();
  });

  afterAll(async () => {
    await downApi?.close();
    await redis?.stop();
  });

  it('answers predict, submit and poll with SERVICE_UNAVAILABLE and Retry-After, promptly', async () => {
    for (const [query, vars] of [
      [PREDICT, { m: 'name-gender', i: { text: 'Ann' } }],
      ['mutation { submitPrediction(model: "name-gender", input: { text: "Ann" }) { id } }', {}],
      ['{ prediction(id: "x") { status } }', {}],
    ] as const) {
      const r = await expectError(gql(downApi.url, query, vars), 503, 'SERVICE_UNAVAILABLE');
      expect(r.headers.get('retry-after')).toBe('1');
    }
  });

  it('fails /ready and keeps /health', async () => {
    expect((await fetch(downApi.url.replace('/graphql', '/ready'))).status).toBe(503);
    expect((await fetch(downApi.url.replace('/graphql', '/health'))).status).toBe(200);
  });

  it('recovers by itself when Redis is back', async () => {
    await redis.start();
    await until(async () => (await fetch(downApi.url.replace('/graphql', '/ready'))).status === 200, 'the API ready again', 30_000, 100);
    const r = await gql<{ submitPrediction: { id: string } }>(
      downApi.url,
      'mutation { submitPrediction(model: "name-gender", input: { text: "Ann" }) { id status } }',
    );
    expect(r.status).toBe(200);
  });
});
