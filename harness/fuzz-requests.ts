/**
 * The fuzzer's requests (test/errors/fuzz.test.ts, bench/fuzz-memory.ts): a seeded generator
 * of random and malformed HTTP requests (bad JSON, wrong types, huge arrays, NaN and Infinity,
 * tiny deadlines, deep queries, alias bombs, unknown models and fields, wrong content types,
 * bad GET parameters, random bytes over HTTP and raw TCP, bad keys, odd methods and paths, and
 * valid work mixed in), and the client that sends them. The API must run with auth on and the
 * keys below (`fuzzApiKeys`) and `http.maxBodyBytes` MAX_BODY.
 */
import { connect } from 'node:net';
import { hashApiKey } from '../server/auth.ts';

export const MAX_BODY = 200_000;
export const KEY = 'fuzz-key-5b7e1d9c';
export const NARROW = 'narrow-key-2c4f6a8e'; // predict:mlp-bench only

/** `BATCHLINE_API_KEYS` for the keys above. */
export const fuzzApiKeys = (): string => `fuzz:${hashApiKey(KEY)}:predict:*,admin;narrow:${hashApiKey(NARROW)}:predict:mlp-bench`;

/** mulberry32: small, fast, seeded. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)];
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(0, 255));
  const ascii = (n: number) => String.fromCharCode(...Array.from({ length: n }, () => int(32, 126)));
  const unicode = (n: number) =>
    Array.from({ length: n }, () =>
      String.fromCodePoint(pick([int(0, 0x7f), int(0x80, 0x7ff), int(0x800, 0xd7ff), int(0x10000, 0x10ffff)])),
    ).join('');
  return { next, int, pick, bytes, ascii, unicode };
}
export type Rng = ReturnType<typeof prng>;

export interface Req {
  kind: string;
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** Raw bytes over TCP instead of fetch. */
  raw?: Uint8Array | string;
}

const auth = { 'x-api-key': KEY };
export const json = { 'content-type': 'application/json', ...auth };
const post = (kind: string, body: unknown, headers: Record<string, string> = json): Req => ({
  kind,
  method: 'POST',
  headers,
  body: typeof body === 'string' ? body : JSON.stringify(body),
});
export const PREDICT =
  'query($m: String!, $v: String, $i: PredictionInput!, $t: Int) { predict(model: $m, version: $v, input: $i, timeoutMs: $t) { label score } }';
const SUBMIT =
  'mutation($m: String!, $i: PredictionInput!, $p: Int, $t: Int) { submitPrediction(model: $m, input: $i, priority: $p, timeoutMs: $t) { id status } }';

export function randomValue(r: Rng, depth = 0): unknown {
  switch (r.int(0, depth > 3 ? 6 : 9)) {
    case 0:
      return null;
    case 1:
      return r.next() < 0.5;
    case 2:
      return r.pick([0, -1, 1e308, -1e308, 2 ** 31, 2 ** 53 + 1, 0.1, -0, 5e-324]);
    case 3:
      return r.ascii(r.int(0, 40));
    case 4:
      return r.unicode(r.int(0, 20));
    case 5:
      return r.pick(['NaN', 'Infinity', '-Infinity', '1e999', '', ' ', '__proto__', 'constructor']);
    case 6:
      return r.int(-10, 10);
    case 7:
      return Array.from({ length: r.int(0, 6) }, () => randomValue(r, depth + 1));
    default:
      return Object.fromEntries(
        Array.from({ length: r.int(0, 5) }, () => [
          r.pick(['text', 'texts', 'features', 'instances', 'tensors', 'name', 'shape', 'data', 'datatype', '__proto__', r.ascii(5)]),
          randomValue(r, depth + 1),
        ]),
      );
  }
}

const MODELS = ['name-gender', 'mlp-bench'];
const generators: [weight: number, make: (r: Rng) => Req][] = [
  // Malformed JSON.
  [
    8,
    (r) => {
      const valid = JSON.stringify({ query: PREDICT, variables: { m: 'name-gender', i: { text: 'Ann' } } });
      return post(
        'bad-json',
        r.pick([
          valid.slice(0, r.int(0, valid.length - 1)),
          `${valid}${r.ascii(3)}`,
          r.ascii(r.int(0, 200)),
          '',
          'null',
          '[]',
          '"query"',
          '42',
          'true',
          '{"query":}',
          '{query:"{ __typename }"}',
          "{'query':'{ __typename }'}",
          '{"query":"{ __typename }",}',
          '\u0000{"query":"{ __typename }"}',
        ]),
      );
    },
  ],
  // Wrong types in variables, and in literals.
  [
    14,
    (r) => {
      const vars = r.pick([
        { m: randomValue(r), i: randomValue(r) },
        { m: r.pick(MODELS), i: randomValue(r) },
        { m: r.pick(MODELS), i: { [r.pick(['text', 'texts', 'features', 'instances', 'tensors'])]: randomValue(r) } },
        {
          m: r.pick(MODELS),
          i: { tensors: [{ name: randomValue(r), shape: randomValue(r), datatype: randomValue(r), data: randomValue(r) }] },
        },
        { m: 'name-gender', i: { text: 'Ann' }, t: randomValue(r) },
        { m: 'name-gender', i: { text: 'Ann' }, v: randomValue(r) },
      ]);
      if (r.next() < 0.3) return post('wrong-types', { query: SUBMIT, variables: { ...vars, p: randomValue(r) } });
      if (r.next() < 0.2) return post('wrong-types', { query: PREDICT, variables: r.pick([[], 'x', 42, null, true]) });
      if (r.next() < 0.2) return post('wrong-types', { query: r.pick([42, null, [], {}, true]), variables: vars });
      if (r.next() < 0.2)
        return post('wrong-types', {
          query: `{ predict(model: "name-gender", input: { features: ${r.pick(['"x"', 'true', '{a: 1}', '[[1]]', 'null', '[null]'])} }) { label } }`,
        });
      return post('wrong-types', { query: PREDICT, variables: vars });
    },
  ],
  // Huge arrays: too many rows, wrong widths, over the body limit.
  [
    6,
    (r) => {
      const n = r.pick([513, 1000, 5000, 20_000, 40_000, 100_000]);
      const input = r.pick([
        () => ({ features: Array.from({ length: n }, () => r.next()) }),
        () => ({ instances: Array.from({ length: Math.min(n, 2000) }, () => [r.next()]) }),
        () => ({ texts: Array.from({ length: Math.min(n, 20_000) }, () => 'Ann') }),
        () => ({ tensors: [{ name: 'input', shape: [1, n], datatype: 'FP32', data: Array.from({ length: n }, () => 1) }] }),
        () => ({ text: 'x'.repeat(n) }),
      ])();
      return post('huge-arrays', { query: r.next() < 0.5 ? PREDICT : SUBMIT, variables: { m: r.pick(MODELS), i: input } });
    },
  ],
  // NaN and Infinity: in JSON (invalid), in GraphQL literals, as strings, and overflowing numbers.
  [
    8,
    (r) => {
      const bad = r.pick(['NaN', 'Infinity', '-Infinity', '1e999', '-1e999', '1e-999', '0x10', '.5', '5.', '+1', '1_000']);
      return r.pick([
        () => post('nan-inf', `{"query":${JSON.stringify(PREDICT)},"variables":{"m":"mlp-bench","i":{"features":[1,${bad},2]}}}`),
        () => post('nan-inf', { query: `{ predict(model: "mlp-bench", input: { features: [1, ${bad}, 3] }) { label } }` }),
        () =>
          post('nan-inf', {
            query: PREDICT,
            variables: { m: 'mlp-bench', i: { features: Array.from({ length: 512 }, (_, k) => (k === 7 ? bad : 1)) } },
          }),
        () => post('nan-inf', { query: PREDICT, variables: { m: 'name-gender', i: { text: 'Ann' }, t: bad } }),
        () => post('nan-inf', `{"query":${JSON.stringify(SUBMIT)},"variables":{"m":"name-gender","i":{"text":"Ann"},"p":${bad}}}`),
      ])();
    },
  ],
  // Tiny and random deadlines: a 1 ms timer can fire before anything awaits it. Each is
  // answered (200) or refused at its deadline (504 DEADLINE_EXCEEDED), and the process lives.
  [
    8,
    (r) => {
      const t = r.pick([1, 1, 2, 2, 3, 5, 7, 10, r.int(1, 50), r.int(1, 3000)]);
      // Names the cache has not seen: the request must really wait on a worker.
      const text = `Zq${r.int(0, 1e9)}`;
      return r.pick([
        () => post('deadline', { query: PREDICT, variables: { m: 'name-gender', i: { text }, t } }),
        () => post('deadline', { query: PREDICT, variables: { m: 'name-gender', i: { texts: [text, `${text}a`] }, t } }),
        () => post('deadline', { query: SUBMIT, variables: { m: 'name-gender', i: { text }, t } }),
      ])();
    },
  ],
  // Deep queries, deep input literals, deep variables.
  [
    6,
    (r) => {
      const d = r.pick([9, 20, 100, 1000, 2400, 5000, 20_000]);
      return r.pick([
        () =>
          post('deep', {
            query: `{ ${'model(name: "name-gender") { versions { '.repeat(Math.ceil(d / 2))}name${' }'.repeat(Math.ceil(d / 2) * 2)} }`,
          }),
        () => post('deep', { query: `{ ${'a { '.repeat(d)}b${' }'.repeat(d)} }` }),
        () => post('deep', { query: `{ predict(model: "mlp-bench", input: { features: ${'['.repeat(d)}1${']'.repeat(d)} }) { label } }` }),
        () =>
          post(
            'deep',
            `{"query":${JSON.stringify(PREDICT)},"variables":{"m":"mlp-bench","i":{"instances":${'['.repeat(d)}1${']'.repeat(d)}}}}`,
          ),
        () => post('deep', `{"query":${JSON.stringify(PREDICT)},"variables":{"m":"mlp-bench","i":${'{"a":'.repeat(d)}1${'}'.repeat(d)}}}`),
        () =>
          post('deep', {
            query: `{ ${'...F '.repeat(3)} } ${Array.from({ length: 30 }, (_, k) => `fragment F${k} on Query { ...F${k + 1} }`).join(' ')} fragment F on Query { ...F0 }`,
          }),
        () => post('deep', { query: '{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }' }),
        // Fragments that fan out (each spreads the next twice): 2^n paths in a small document.
        () =>
          post('deep', {
            query: `{ ...F0 } ${Array.from({ length: 40 }, (_, k) => `fragment F${k} on Query { ...F${k + 1} ...F${k + 1} }`).join(' ')} fragment F40 on Query { models { name } }`,
          }),
      ])();
    },
  ],
  // Alias bombs.
  [
    6,
    (r) => {
      const n = r.pick([16, 100, 1000, 5000]);
      const field = r.pick([
        '__typename',
        'models { name }',
        'predict(model: "name-gender", input: { text: "Ann" }) { label }',
        'prediction(id: "x") { status }',
      ]);
      const query = `{ ${Array.from({ length: n }, (_, k) => `a${k}: ${field}`).join(' ')} }`;
      return r.next() < 0.2
        ? post('alias-bomb', {
            query: `mutation { ${Array.from({ length: Math.min(n, 200) }, (_, k) => `s${k}: submitPrediction(model: "name-gender", input: { text: "Ann" }) { id }`).join(' ')} }`,
          })
        : post('alias-bomb', { query });
    },
  ],
  // Unknown models, versions and prediction ids.
  [
    8,
    (r) => {
      const name = r.pick([
        '',
        ' ',
        'nope',
        'NAME-GENDER',
        'name-gender ',
        '../name-gender',
        'name-gender\u0000',
        '*',
        'x'.repeat(10_000),
        r.unicode(8),
        r.ascii(20),
      ]);
      return r.pick([
        () => post('unknown-model', { query: PREDICT, variables: { m: name, i: { text: 'Ann' } } }),
        () => post('unknown-model', { query: SUBMIT, variables: { m: name, i: { text: 'Ann' } } }),
        () => post('unknown-model', { query: PREDICT, variables: { m: 'name-gender', v: name, i: { text: 'Ann' } } }),
        () => post('unknown-model', { query: 'query($id: ID!) { prediction(id: $id) { status } }', variables: { id: name } }),
        () => post('unknown-model', { query: 'query($n: String!) { model(name: $n) { name } }', variables: { n: name } }),
      ])();
    },
  ],
  // Unknown fields, arguments, types, operations.
  [
    8,
    (r) =>
      post('unknown-fields', {
        query: r.pick([
          `{ ${r.pick(['nope', 'predictt', 'Models', '__schemaa', '__type'])} }`,
          '{ models { nope } }',
          '{ predict(model: "name-gender", input: { text: "Ann" }, nope: 1) { label } }',
          '{ predict(model: "name-gender", input: { txt: "Ann" }) { label } }',
          'query($x: Nope) { models { name } }',
          'query A { models { name } } query B { __typename }',
          'subscription { models { name } }',
          'subscription { a: predictionResult(id: "x") { status } b: predictionResult(id: "y") { status } }',
          '{ __typename @nope }',
          `{ __typename ${'@include(if: true) '.repeat(r.int(2, 60))}}`,
          'fragment F on Nope { x } { ...F }',
          `{ ${r.ascii(30)} }`,
        ]),
        ...(r.next() < 0.3 ? { operationName: r.pick(['A', 'Z', '', 42]) } : {}),
        ...(r.next() < 0.2 ? { extensions: randomValue(r) } : {}),
      }),
  ],
  // Wrong content types.
  [
    8,
    (r) => {
      const body = JSON.stringify({ query: '{ models { name } }' });
      const ct = r.pick([
        'text/plain',
        'application/xml',
        'application/octet-stream',
        'multipart/form-data; boundary=xyz',
        'multipart/form-data',
        'application/x-www-form-urlencoded',
        'application/graphql',
        'application/json; charset=utf-16',
        'application/jsonx',
        '*/*',
        'json',
        '',
      ]);
      const payload = r.pick([
        body,
        r.ascii(100),
        `--xyz\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${r.ascii(20)}\r\n--xyz--`,
        'query=%7B+models+%7B+name+%7D+%7D&variables=%ZZ',
        '{ models { name } }',
      ]);
      return { kind: 'content-type', method: 'POST', headers: ct ? { 'content-type': ct, ...auth } : auth, body: payload };
    },
  ],
  // GET with bad parameters.
  [
    8,
    (r) => {
      const q = r.pick([
        `query=${encodeURIComponent('{ models { name } }')}&variables=${r.pick(['notjson', '[]', '42', '%7B', 'null'])}`,
        `query=${encodeURIComponent('mutation { submitPrediction(model: "name-gender", input: { text: "Ann" }) { id } }')}`,
        `query=${encodeURIComponent(r.ascii(50))}`,
        'query=',
        '',
        'query=%ZZ%',
        `query=${encodeURIComponent('{ __typename }')}&query=${encodeURIComponent('{ models { name } }')}`,
        `query=${encodeURIComponent('{ __typename }')}&operationName=${encodeURIComponent(r.ascii(10))}`,
        `query=${encodeURIComponent('{ __typename }')}&extensions=${encodeURIComponent(r.ascii(10))}`,
        `query=${'a'.repeat(r.pick([1000, 8000, 20_000]))}`,
        `variables=${encodeURIComponent('{"a":1}')}`,
      ]);
      return {
        kind: 'bad-get',
        method: 'GET',
        path: `/graphql?${q}`,
        headers: {
          ...auth,
          accept: r.pick(['application/json', 'application/graphql-response+json', 'text/event-stream', '*/*', 'application/xml']),
        },
      };
    },
  ],
  // Random bytes as the body.
  [
    5,
    (r) => ({
      kind: 'random-bytes',
      method: 'POST',
      headers: r.next() < 0.5 ? json : { 'content-type': 'application/octet-stream', ...auth },
      body: r.bytes(r.int(0, 4000)),
    }),
  ],
  // Random bytes, and broken HTTP, over raw TCP.
  [
    3,
    (r) => ({
      kind: 'raw-tcp',
      raw: r.pick([
        () => r.bytes(r.int(1, 2000)),
        () =>
          `POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: ${r.pick(['-1', 'abc', '99999999999999999999', '1, 2'])}\r\nContent-Type: application/json\r\n\r\n{}`,
        () =>
          `POST /graphql HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nzz\r\n`,
        () =>
          `GET /graphql?query=%7B__typename%7D HTTP/1.1\r\nHost: x\r\nX-Api-Key: ${KEY}\r\n${'X-Pad: '.concat('a'.repeat(20_000))}\r\n\r\n`,
        () => `${r.pick(['GET', 'POST', 'BREW', 'G\u0000T'])} ${r.ascii(30)} HTTP/${r.pick(['1.1', '9.9', 'x'])}\r\n\r\n`,
        () =>
          `POST /graphql HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\nX-Api-Key: ${KEY}\r\n\r\n${r.pick(['zz', 'ffffffffffffffff', '-1'])}\r\n${r.ascii(10)}\r\n0\r\n\r\n`,
      ])(),
    }),
  ],
  // Keys: missing, wrong, a key for another model, odd header shapes.
  [
    6,
    (r) => {
      const body = JSON.stringify({ query: PREDICT, variables: { m: 'name-gender', i: { text: 'Ann' } } });
      const headers = r.pick<Record<string, string>>([
        {},
        { 'x-api-key': 'wrong' },
        { 'x-api-key': NARROW },
        { 'x-api-key': `${KEY} ` },
        { 'x-api-key': 'k'.repeat(5000) },
        { authorization: `Bearer ${r.ascii(20).replace(/\s/g, '')}` },
        { authorization: 'Bearer' },
        { authorization: `Basic ${KEY}` },
        { 'x-api-key': '' },
      ]);
      return { kind: 'auth', method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body };
    },
  ],
  // Methods and paths.
  [
    4,
    (r) => ({
      kind: 'method-path',
      method: r.pick(['PUT', 'DELETE', 'PATCH', 'OPTIONS', 'POST', 'GET']),
      path: r.pick([
        '/graphql',
        '/graphql/',
        '/graphql/x',
        '/GraphQL',
        '/',
        '/nope',
        '/graphql?',
        '/%2e%2e/graphql',
        '/graphql%00',
        '/metrics?x=1',
        '/health/../graphql',
      ]),
      headers: json,
      body: undefined,
    }),
  ],
  // Valid work, mixed in: every answer here is a 200.
  [
    6,
    (r) =>
      r.pick([
        () =>
          post('valid', {
            query: PREDICT,
            variables: { m: 'name-gender', i: { text: r.pick(['Maria', 'John', 'Ann', 'Robert', 'Zoe']) } },
          }),
        () => post('valid', { query: SUBMIT, variables: { m: 'name-gender', i: { texts: ['Ann', 'Bob'] }, p: r.int(1, 10) } }),
        () => post('valid', { query: '{ models { name version status ready } }' }),
        () => post('valid', { query: '{ model(name: "mlp-bench") { name versions { version } } }' }),
        () => ({
          kind: 'valid',
          method: 'GET',
          path: `/graphql?query=${encodeURIComponent('{ models { name } }')}`,
          headers: { ...auth, accept: 'application/json' },
        }),
      ])(),
  ],
];

export function makeRequest(r: Rng): Req {
  const total = generators.reduce((s, [w]) => s + w, 0);
  let x = r.next() * total;
  for (const [w, make] of generators) {
    if ((x -= w) < 0) return make(r);
  }
  return generators[0][1](r);
}

/** Status from a raw TCP exchange, or 0 when the server closed without an answer. */
function rawExchange(port: number, bytes: Uint8Array | string): Promise<number> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    const done = (): void => {
      socket.destroy();
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(data);
      resolve(m ? Number(m[1]) : 0);
    };
    socket.setTimeout(10_000, done);
    socket.on('data', (d) => {
      data += d.toString('latin1');
      if (/^HTTP\/1\.[01] \d{3}/.test(data) && data.includes('\r\n\r\n')) done();
    });
    socket.on('error', done);
    socket.on('close', done);
    socket.on('connect', () => socket.end(bytes));
  });
}

/** Sends one request to the API at `base` (`http://127.0.0.1:<port>`): its status, 0 when closed without an answer. */
export async function send(base: string, req: Req): Promise<number> {
  if (req.raw !== undefined) return rawExchange(Number(new URL(base).port), req.raw);
  const res = await fetch(base + (req.path ?? '/graphql'), {
    method: req.method ?? 'POST',
    headers: req.headers,
    body: req.body as BodyInit | undefined,
  });
  await res.arrayBuffer();
  return res.status;
}
