/**
 * Error, limit and auth mapping, in process: the composed app (server/app.ts) answers
 * `yoga.fetch(...)` with no port and no other process. Nothing here depends on a worker or
 * on Redis behaviour (the app connects to the suite's private Redis only so /ready is true);
 * what crosses processes is tested with real processes elsewhere.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createApp, type App } from '../../server/app.ts';
import { hashApiKey } from '../../server/auth.ts';
import { createLogger } from '../../core/telemetry/logger.ts';
import { Deadline } from '../../core/lifecycle/shutdown.ts';
import { configFor, uniquePrefix } from '../../harness/stack.ts';

const KEY = 'in-process-1f2e3d4c';
const NARROW = 'narrow-5a6b7c8d9e0f';
let app: App;

beforeAll(async () => {
  const config = configFor({
    redisUrl: inject('redisUrl'),
    prefix: uniquePrefix('inproc'),
    env: {
      BATCHLINE_AUTH: 'true',
      BATCHLINE_API_KEYS: `all:${hashApiKey(KEY)}:predict:*;narrow:${hashApiKey(NARROW)}:predict:mlp-bench`,
      BATCHLINE_MAINTENANCE: 'false',
      // Low, so a query of this schema's own shape goes over it.
      BATCHLINE_MAX_DEPTH: '2',
    },
  });
  app = await createApp({ config, logger: createLogger({ ...config.log, level: 'silent' }) });
});
afterAll(async () => {
  await app?.drain(0);
  await app?.release(new Deadline(5000));
});

async function post(body: unknown, headers: Record<string, string> = { 'x-api-key': KEY }) {
  const res = await app.yoga.fetch('http://in-process/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const json = (await res.json()) as { data?: unknown; errors?: { message: string; extensions?: Record<string, unknown> }[] };
  return { status: res.status, headers: res.headers, json, code: json.errors?.[0]?.extensions?.code };
}

describe('the composed app over fetch, with no port', () => {
  it('answers a query and says it is ready', async () => {
    expect((await post({ query: '{ __typename }' })).json).toEqual({ data: { __typename: 'Query' } });
    expect((await app.yoga.fetch('http://in-process/ready')).status).toBe(200);
  });

  it('401 UNAUTHENTICATED without a key, 403 FORBIDDEN for a model outside the key’s scope', async () => {
    const anon = await post({ query: '{ __typename }' }, {});
    expect([anon.status, anon.code]).toEqual([401, 'UNAUTHENTICATED']);
    const q = { query: '{ predict(model: "name-gender", input: { text: "Maria" }) { label } }' };
    const narrow = await post(q, { 'x-api-key': NARROW });
    expect([narrow.status, narrow.code]).toEqual([403, 'FORBIDDEN']);
  });

  it('404 MODEL_NOT_FOUND and MODEL_VERSION_NOT_FOUND, named', async () => {
    const m = await post({ query: '{ predict(model: "nope", input: { text: "x" }) { label } }' });
    expect([m.status, m.code]).toEqual([404, 'MODEL_NOT_FOUND']);
    const v = await post({ query: '{ predict(model: "name-gender", version: "99", input: { text: "x" }) { label } }' });
    expect([v.status, v.code]).toEqual([404, 'MODEL_VERSION_NOT_FOUND']);
  });

  it('400 BAD_USER_INPUT names the field; a wrong argument value is BAD_USER_INPUT, a wrong field GRAPHQL_VALIDATION_FAILED', async () => {
    const t = await post({ query: '{ predict(model: "name-gender", input: { text: "Maria" }, timeoutMs: -1) { label } }' });
    expect([t.status, t.code, t.json.errors?.[0]?.extensions?.field]).toEqual([400, 'BAD_USER_INPUT', 'timeoutMs']);
    const value = await post({ query: '{ predict(model: 3, input: { text: "x" }) { label } }' });
    expect([value.status, value.code]).toEqual([400, 'BAD_USER_INPUT']);
    const shape = await post({ query: '{ nothingHere }' });
    expect([shape.status, shape.code]).toEqual([400, 'GRAPHQL_VALIDATION_FAILED']);
  });

  it('400 GRAPHQL_PARSE_FAILED for a document that is not GraphQL; 415 for a body that is not JSON', async () => {
    const p = await post({ query: '{ predict(' });
    expect([p.status, p.code]).toEqual([400, 'GRAPHQL_PARSE_FAILED']);
    const res = await app.yoga.fetch('http://in-process/graphql', {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'x-api-key': KEY },
      body: '{ __typename }',
    });
    expect(res.status).toBe(415);
    expect(((await res.json()) as { errors: { extensions: { code: string } }[] }).errors[0].extensions.code).toBe('UNSUPPORTED_MEDIA_TYPE');
  });

  it('a query over the depth limit is refused before it runs, naming the limit', async () => {
    expect((await post({ query: '{ models { name } }' })).status).toBe(200);
    const r = await post({ query: '{ models { outputs { name } } }' });
    expect([r.status, r.code]).toEqual([400, 'GRAPHQL_VALIDATION_FAILED']);
    expect(r.json.errors?.[0]?.message).toMatch(/depth limit of 2/);
    expect(r.json.data).toBeUndefined();
  });

  it('503 SERVICE_UNAVAILABLE with Retry-After when no worker serves the model (none runs here)', async () => {
    const r = await post({ query: '{ predict(model: "name-gender", input: { text: "Maria" }) { label } }' });
    expect([r.status, r.code]).toEqual([503, 'SERVICE_UNAVAILABLE']);
    expect(r.headers.get('retry-after')).toBe('1');
  });
});
