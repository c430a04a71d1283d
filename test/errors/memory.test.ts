/**
 * Memory under hostile input: many distinct large documents do not pile up in yoga's parse
 * cache. The API runs with a 160 MB heap: 300 distinct 900 KB queries held ~360 MB in the
 * count-bounded cache (the process died of it), while the byte-bounded one keeps none of them.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BYTES_PER_SOURCE_CHAR, parseCache } from '../../server/parse-cache.ts';
import { dropPrefix, listeningPort, spawnCli, uniquePrefix, type Child } from '../../harness/stack.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('memory');
let api: Child;
let url: string;

const rssMb = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

beforeAll(async () => {
  api = await spawnCli(
    ['serve'],
    {
      redisUrl,
      prefix,
      env: {
        BATCHLINE_HOST: '127.0.0.1',
        BATCHLINE_PORT: '0',
        BATCHLINE_MAX_BODY_BYTES: String(1024 * 1024),
        BATCHLINE_MAINTENANCE: 'false',
        NODE_OPTIONS: '--max-old-space-size=160',
      },
    },
    /"msg":"API listening"/,
  );
  url = `http://127.0.0.1:${listeningPort(api)}/graphql`;
});

afterAll(async () => {
  await api?.stop();
  await dropPrefix(redisUrl, prefix);
});

describe('the parse cache is bounded by bytes', () => {
  it('300 distinct 900 KB queries leave the API alive and its memory where it was', { timeout: 120_000 }, async () => {
    const before = rssMb(api.proc.pid!);
    const pad = 'x'.repeat(900 * 1024);
    let next = 0;
    const statuses = new Map<number, number>();
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < 300) {
          const k = next++;
          const res = await fetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ query: `{ model(name: "${k}${pad}") { name } }` }),
          });
          await res.arrayBuffer();
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        }
      }),
    );
    const after = rssMb(api.proc.pid!);
    console.log(`API resident memory: ${before.toFixed(0)} MB before, ${after.toFixed(0)} MB after 300 distinct 900 KB documents`);
    expect(Object.fromEntries(statuses)).toEqual({ 200: 300 });
    expect((await fetch(url.replace('/graphql', '/health'))).status).toBe(200);
  });

  it('holds small documents up to its byte bound, and never one over the document limit', () => {
    const cache = parseCache({ maxBytes: 64 * 1024, maxDocumentBytes: 1024 });
    const doc = { kind: 'Document', definitions: [] } as never;
    cache.documentCache!.set('x'.repeat(2000), doc);
    expect(cache.bytes()).toBe(0);
    for (let k = 0; k < 100; k++) cache.documentCache!.set(`${k}`.padEnd(1000, ' '), doc);
    expect(cache.bytes()).toBeLessThanOrEqual(64 * 1024);
    expect(cache.bytes()).toBeGreaterThan(64 * 1024 - 1000 * BYTES_PER_SOURCE_CHAR);
    expect(cache.documentCache!.get('99'.padEnd(1000, ' '))).toBe(doc);
  });
});
