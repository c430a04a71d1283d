/**
 * What the parse cache keeps with a failed document: only the error, not the request that
 * failed first. An error's stack is kept unformatted by V8 until read, and its frames hold
 * their receivers and closures: yoga's cached validation errors held the failing request's
 * context (node's request and response, its body), and cached parse errors the parser with
 * every token of the document; ~320 requests' worth after three fuzz runs
 * (bench/fuzz-memory.ts). Each case sends a request with a context object of its own, drops it,
 * collects garbage, and asks a WeakRef whether anything still holds it. The first case fails
 * without the fix; the other two guard parse errors and cached documents the same way.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createSchema, createYoga, type Plugin } from 'graphql-yoga';
import { describe, expect, it } from 'vitest';
import { parseCache, useCompactValidationErrors } from '../../../server/parse-cache.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const schema = createSchema({ typeDefs: 'type Query { hello: String }', resolvers: { Query: { hello: () => 'hi' } } });

/** Sends `query` with a fresh server context; resolves with a WeakRef to that context once nothing else holds it. */
async function contextAfter(
  plugins: Plugin[],
  query: string,
): Promise<{ status: number; ref: WeakRef<object>; cache: ReturnType<typeof parseCache> }> {
  const cache = parseCache();
  const yoga = createYoga({ schema, parserAndValidationCache: cache, plugins, logging: false });
  let status = 0;
  const ref = await (async () => {
    const context = { payload: new Array<number>(10_000).fill(1) };
    const res = await yoga.fetch(
      'http://localhost/graphql',
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
        body: JSON.stringify({ query }),
      },
      context,
    );
    status = res.status;
    await res.text();
    return new WeakRef(context);
  })();
  // A WeakRef's target lives until the end of the job that made it: collect in a later one.
  for (let k = 0; k < 3; k++) {
    await new Promise((r) => setTimeout(r, 0));
    gc();
  }
  return { status, ref, cache };
}

describe('the parse cache keeps no failed request alive', () => {
  it('a validation error cached with its document holds no request context', async () => {
    const { status, ref } = await contextAfter([useCompactValidationErrors()], '{ nope }');
    expect(status).toBe(400);
    expect(ref.deref()).toBeUndefined();
  });

  it('a parse error in the error cache holds no request context', async () => {
    const { status, ref, cache } = await contextAfter([], '{ hello');
    expect(status).toBe(400);
    expect(cache.bytes()).toBeGreaterThan(0);
    expect(ref.deref()).toBeUndefined();
  });

  it('a valid document cached holds no request context', async () => {
    const { status, ref, cache } = await contextAfter([], '{ hello }');
    expect(status).toBe(200);
    expect(cache.bytes()).toBeGreaterThan(0);
    expect(ref.deref()).toBeUndefined();
  });
});
