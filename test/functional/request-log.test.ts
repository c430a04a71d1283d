/**
 * A line per request, and a request id on every answer. The API runs as `batchline serve`
 * (its log is its stdout, as in production).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import { dropPrefix, listeningPort, spawnCli, uniquePrefix, type Child } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('reqlog');
const started: Child[] = [];

async function serve(requests: string): Promise<{ child: Child; base: string }> {
  const child = await spawnCli(
    ['serve'],
    {
      redisUrl,
      prefix,
      env: {
        BATCHLINE_HOST: '127.0.0.1',
        BATCHLINE_PORT: '0',
        BATCHLINE_MAINTENANCE: 'false',
        BATCHLINE_LOG_REQUESTS: requests,
        BATCHLINE_MAX_BODY_BYTES: '10000',
      },
    },
    /"msg":"API listening"/,
  );
  started.push(child);
  return { child, base: `http://127.0.0.1:${listeningPort(child)}` };
}

const requestLines = (child: Child): Record<string, unknown>[] =>
  child
    .output()
    .split('\n')
    .filter((l) => l.includes('"msg":"request"'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

const post = (base: string, query: string, headers: Record<string, string> = {}) =>
  fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ query }),
  });

let all: { child: Child; base: string };
beforeAll(async () => {
  all = await serve('all');
});
afterAll(async () => {
  await Promise.all(started.map((c) => c.stop()));
  await dropPrefix(redisUrl, prefix);
});

describe('x-request-id', () => {
  it('is on every answer: GraphQL, errors, /health, /metrics, and the 413 sent before yoga', async () => {
    const answers = [
      await post(all.base, '{ __typename }'),
      await post(all.base, '{ nope }'),
      await fetch(`${all.base}/health`),
      await fetch(`${all.base}/metrics`),
      await fetch(`${all.base}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(20_000) }),
    ];
    for (const r of answers) expect(r.headers.get('x-request-id'), r.url).toMatch(/^[\w.:-]{8,}$/);
    expect(new Set(answers.map((r) => r.headers.get('x-request-id'))).size).toBe(answers.length);
  });

  it('echoes the client’s own id, and refuses to echo one that is not a plain token', async () => {
    expect((await post(all.base, '{ __typename }', { 'x-request-id': 'client-42.a:b' })).headers.get('x-request-id')).toBe('client-42.a:b');
    expect((await post(all.base, '{ __typename }', { 'x-request-id': 'bad id with spaces' })).headers.get('x-request-id')).not.toMatch(
      /bad/,
    );
  });
});

describe('the request line', () => {
  it('names the operation, model, status, code, milliseconds and request id', async () => {
    const r = await post(all.base, '{ predict(model: "no-such-model", input: { text: "Ann" }) { label } }', { 'x-request-id': 'line-1' });
    expect(r.status).toBe(404);
    await until(() => requestLines(all.child).some((l) => l.requestId === 'line-1'), 'the request line');
    const line = requestLines(all.child).find((l) => l.requestId === 'line-1')!;
    expect(line).toMatchObject({
      level: 30,
      operation: 'query predict',
      model: 'no-such-model',
      status: 404,
      code: 'MODEL_NOT_FOUND',
      path: '/graphql',
      method: 'POST',
    });
    expect(typeof line.ms).toBe('number');
  });

  it('a model given as a variable is named too, and a WebSocket operation has its own line', async () => {
    await fetch(`${all.base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'line-2' },
      body: JSON.stringify({
        query: 'query($m: String!) { predict(model: $m, input: { text: "Ann" }) { label } }',
        variables: { m: 'also-missing' },
      }),
    });
    const client = createClient({
      url: `${all.base.replace('http', 'ws')}/graphql`,
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: true,
    });
    await new Promise<void>((resolve) =>
      client.subscribe({ query: '{ model(name: "x") { name } }' }, { next: () => {}, error: () => resolve(), complete: () => resolve() }),
    );
    await client.dispose();
    await until(
      () =>
        requestLines(all.child).some((l) => l.requestId === 'line-2') && requestLines(all.child).some((l) => l.transport === 'websocket'),
      'both lines',
    );
    expect(requestLines(all.child).find((l) => l.requestId === 'line-2')).toMatchObject({
      operation: 'query predict',
      model: 'also-missing',
      code: 'MODEL_NOT_FOUND',
    });
    expect(requestLines(all.child).find((l) => l.transport === 'websocket')).toMatchObject({ operation: 'query model' });
  });

  it('log.requests: errors logs only answers of 400 and above; off logs none', async () => {
    const errorsOnly = await serve('errors');
    const off = await serve('off');
    for (const { base } of [errorsOnly, off]) {
      await post(base, '{ __typename }', { 'x-request-id': 'fine' });
      await post(base, '{ nope }', { 'x-request-id': 'broken' });
    }
    await until(() => requestLines(errorsOnly.child).some((l) => l.requestId === 'broken'), 'the error line');
    expect(requestLines(errorsOnly.child).map((l) => l.requestId)).toEqual(['broken']);
    expect(requestLines(off.child)).toEqual([]);
  });
});

describe('log.format', () => {
  it('pretty: one human-readable line per record, the last ones at exit included; piped with auto it stays JSON (above)', async () => {
    const child = await spawnCli(
      ['serve'],
      {
        redisUrl,
        prefix,
        env: { BATCHLINE_HOST: '127.0.0.1', BATCHLINE_PORT: '0', BATCHLINE_MAINTENANCE: 'false', BATCHLINE_LOG_FORMAT: 'pretty' },
      },
      /INFO: api: API listening/,
    );
    started.push(child);
    const port = /INFO: api: API listening \{"port":(\d+)/.exec(child.output())![1];
    await post(`http://127.0.0.1:${port}`, '{ nope }', { 'x-request-id': 'pretty-1' });
    await until(
      () => /INFO: api: request \{.*"requestId":"pretty-1"/.test(child.output()),
      () => `the pretty request line in:\n${child.output()}`,
    );
    await child.stop();
    const lines = child.output().split('\n').filter(Boolean);
    // Not a JSON object among them, and each starts with its time and level.
    expect(lines.filter((l) => !/^\[\d\d:\d\d:\d\d\.\d{3}\] (TRACE|DEBUG|INFO|WARN|ERROR|FATAL): /.test(l))).toEqual([]);
    expect(lines.at(-1)).toMatch(/INFO: api: API stopped/);
  });
});
