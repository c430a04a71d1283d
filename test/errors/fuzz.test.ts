/**
 * Fuzz: thousands of random and malformed requests (bad JSON, wrong types, huge arrays,
 * NaN and Infinity, deep queries, alias bombs, unknown models and fields, wrong content
 * types, bad GET parameters, bad keys, random bytes over HTTP and raw TCP, garbage
 * WebSocket frames) get 4xx answers, never 5xx, and the server stays healthy throughout:
 * /health answers 200 between batches, and a valid prediction works at the end.
 *
 * The API runs as a `batchline serve` child process, as in production. The generator is
 * seeded (FUZZ_SEED overrides the default): a failure prints the seed and the requests
 * that failed, so it reproduces.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import WebSocket from 'ws';
import { CloseCode } from 'graphql-ws';
import { dropPrefix, spawnCli, startWorker, uniquePrefix, type Child } from '../../harness/stack.ts';
import {
  fuzzApiKeys,
  json,
  KEY,
  makeRequest,
  MAX_BODY,
  PREDICT,
  prng,
  randomValue,
  send as sendTo,
  type Req,
} from '../../harness/fuzz-requests.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('fuzz');
const SEED = Number(process.env.FUZZ_SEED ?? 20251125);
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 5000);
const CONCURRENCY = 8;
const opts = {
  redisUrl,
  prefix,
  env: {
    BATCHLINE_AUTH: 'true',
    BATCHLINE_API_KEYS: fuzzApiKeys(),
    BATCHLINE_MAX_BODY_BYTES: String(MAX_BODY),
    BATCHLINE_HOST: '127.0.0.1',
    BATCHLINE_PORT: '0',
  },
};

let api: Child;
let worker: Child;
let base: string;
let port: number;
const send = (req: Req): Promise<number> => sendTo(base, req);

beforeAll(async () => {
  [worker, api] = await Promise.all([startWorker('cpu', opts), spawnCli(['serve'], opts, /"msg":"API listening"/)]);
  port = Number(/"port":(\d+)[^\n]*"msg":"API listening"/.exec(api.output())![1]);
  base = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await api?.stop();
  await worker?.stop();
  await dropPrefix(redisUrl, prefix);
});

const counts = { requests: 0, deadlineExceeded: 0, s2xx: 0, s3xx: 0, s4xx: 0, s5xx: 0, closedWithoutAnswer: 0, resetAfter413: 0 };
const failures: string[] = [];
const byKind = new Map<string, Map<number, number>>();
let healthChecks = 0;

describe('fuzz', () => {
  it(`${REQUESTS} random and malformed requests: 4xx, never 5xx; healthy throughout (seed ${SEED})`, { timeout: 120_000 }, async () => {
    const r = prng(SEED);
    const queue = Array.from({ length: REQUESTS }, () => makeRequest(r));
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < queue.length) {
        const i = next++;
        const req = queue[i];
        let status: number;
        try {
          status = await send(req);
        } catch (e) {
          status = -1;
          // A body over the limit is answered 413 and the connection closed at once: a client
          // still uploading may see the reset before the answer. Anything else is a failure.
          if (typeof req.body === 'string' && Buffer.byteLength(req.body) > MAX_BODY) counts.resetAfter413++;
          else
            failures.push(`#${i} ${req.kind}: client error ${(e as Error).message}: ${String(req.body ?? req.path ?? '').slice(0, 120)}`);
        }
        counts.requests++;
        if (status === 0) counts.closedWithoutAnswer++;
        else if (status >= 200 && status < 300) counts.s2xx++;
        else if (status >= 300 && status < 400) counts.s3xx++;
        else if (status >= 400 && status < 500) counts.s4xx++;
        else if (status === 504 && req.kind === 'deadline') counts.deadlineExceeded++;
        else if (status >= 500) {
          counts.s5xx++;
          failures.push(
            `#${i} ${req.kind}: ${status} for ${req.method ?? 'RAW'} ${req.path ?? ''} ${String(req.body ?? req.raw ?? '').slice(0, 200)}`,
          );
        }
        const k = byKind.get(req.kind) ?? new Map<number, number>();
        k.set(status, (k.get(status) ?? 0) + 1);
        byKind.set(req.kind, k);
        if (i % 250 === 0) {
          const h = await fetch(`${base}/health`);
          healthChecks++;
          if (h.status !== 200) failures.push(`#${i}: /health answered ${h.status}`);
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, lane));

    console.log(
      `fuzz seed=${SEED}: requests=${counts.requests} 2xx=${counts.s2xx} 3xx=${counts.s3xx} 4xx=${counts.s4xx} 5xx=${counts.s5xx} deadline-504=${counts.deadlineExceeded} closed-without-answer=${counts.closedWithoutAnswer} reset-after-413=${counts.resetAfter413} health-checks=${healthChecks}\n` +
        [...byKind]
          .map(
            ([kind, m]) =>
              `  ${kind}: ${[...m]
                .sort(([a], [b]) => a - b)
                .map(([s, n]) => `${s}x${n}`)
                .join(' ')}`,
          )
          .join('\n'),
    );
    expect(failures, failures.slice(0, 20).join('\n')).toEqual([]);
    expect(counts.s5xx).toBe(0);
    expect(counts.s4xx).toBeGreaterThan(REQUESTS / 2);
    // Only garbage over raw TCP may be dropped without an answer.
    expect(counts.closedWithoutAnswer).toBeLessThanOrEqual(
      byKind.get('raw-tcp') ? [...byKind.get('raw-tcp')!.values()].reduce((a, b) => a + b, 0) : 0,
    );
    // Valid requests mixed in all succeeded.
    expect([...(byKind.get('valid') ?? new Map()).keys()]).toEqual([200]);
    // No unexpected error reached the server's log.
    expect(serverErrors()).toEqual([]);
  });

  it('garbage over WebSocket closes sockets with protocol codes, never an internal error', { timeout: 60_000 }, async () => {
    const r = prng(SEED + 1);
    const codes = new Map<number, number>();
    const scenarios = Array.from({ length: 150 }, () => {
      const init = r.pick([
        undefined,
        { type: 'connection_init' },
        { type: 'connection_init', payload: { apiKey: KEY } },
        { type: 'connection_init', payload: { apiKey: 'wrong' } },
        { type: 'connection_init', payload: r.pick([42, 'x', null, [KEY]]) },
      ]);
      const messages: (string | Uint8Array)[] = [];
      if (init) messages.push(JSON.stringify(init));
      for (let k = r.int(1, 4); k > 0; k--) {
        messages.push(
          r.pick([
            () => r.bytes(r.int(1, 100)),
            () => r.ascii(r.int(0, 100)),
            () =>
              JSON.stringify({
                type: r.pick(['subscribe', 'next', 'complete', 'ping', 'pong', 'nope', 42, null]),
                id: randomValue(r),
                payload: randomValue(r),
              }),
            () =>
              JSON.stringify({
                type: 'subscribe',
                id: String(r.int(1, 3)),
                payload: {
                  query: r.pick([
                    '{ __typename }',
                    '{ nope }',
                    `{ ${'a { '.repeat(30)}b${' }'.repeat(30)} }`,
                    aliasesOf(r.int(16, 500)),
                    '{ predict(model: "nope", input: { text: "x" }) { label } }',
                    r.ascii(30),
                    42,
                  ]),
                  variables: randomValue(r),
                },
              }),
            () => JSON.stringify({ type: 'connection_init', payload: { apiKey: KEY } }),
          ])(),
        );
      }
      return { protocol: r.next() < 0.9 ? 'graphql-transport-ws' : 'graphql-ws', messages };
    });
    await Promise.all(
      Array.from({ length: 6 }, async (_, lane) => {
        for (let s = lane; s < scenarios.length; s += 6) {
          const code = await new Promise<number>((resolve) => {
            const socket = new WebSocket(`ws://127.0.0.1:${port}/graphql`, scenarios[s].protocol);
            // The client's own close starts at 'open': closing a socket still connecting is 1006 by the client, not the server.
            let timer: NodeJS.Timeout | undefined;
            let refusedProtocol = false;
            socket.on('open', () => {
              for (const m of scenarios[s].messages) socket.send(m);
              timer = setTimeout(() => socket.close(1000), 500);
            });
            socket.on('close', (c) => {
              clearTimeout(timer);
              // 0: the server did not take the old `graphql-ws` subprotocol, so the client gave up.
              resolve(refusedProtocol ? 0 : c);
            });
            socket.on('error', (e) => void (refusedProtocol = /subprotocol/.test(e.message)));
          });
          codes.set(code, (codes.get(code) ?? 0) + 1);
        }
      }),
    );
    console.log(
      `fuzz websocket seed=${SEED + 1}: connections=${scenarios.length} close codes ${[...codes]
        .sort(([a], [b]) => a - b)
        .map(([c, n]) => `${c}x${n}`)
        .join(' ')}`,
    );
    expect(codes.has(CloseCode.InternalServerError)).toBe(false);
    expect(codes.has(1011)).toBe(false);
    expect(codes.has(1006)).toBe(false);
    expect(serverErrors()).toEqual([]);
  });

  it('the server is healthy after all of it: /health, /ready, and a valid prediction', async () => {
    expect((await fetch(`${base}/health`)).status).toBe(200);
    expect((await fetch(`${base}/ready`)).status).toBe(200);
    const res = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ query: PREDICT, variables: { m: 'name-gender', i: { text: 'Maria' } } }),
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { data: { predict: { label: string } } }).data.predict.label).toBe('female');
  });
});

/** Lines of the server's output that report an unexpected error (maskError, graphql-ws). */
function serverErrors(): string[] {
  const lines = api.output().split('\n');
  return lines.flatMap((line, i) =>
    /"msg":"unexpected error"|Internal error/.test(line)
      ? [
          lines
            .slice(i, i + 4)
            .join(' | ')
            .slice(0, 600),
        ]
      : [],
  );
}

function aliasesOf(n: number): string {
  return `{ ${Array.from({ length: n }, (_, k) => `a${k}: __typename`).join(' ')} }`;
}
