/**
 * The Open Inference Protocol (KServe v2) over REST, JSON and binary, against a real stack:
 * a private Redis, BullMQ, worker processes running onnxruntime-node, the API on real HTTP.
 * The spec's own examples (metadata, JSON infer, binary infer, errors), and the malformed
 * binary bodies, each a 400 that leaves the connection and the server usable.
 */
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { gql } from '../support/clients.ts';
import { dropPrefix, startApi, startWorker, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('oip');
const opts = { redisUrl, prefix };
let api: RunningApi;
let base: string;
const workers: Child[] = [];

beforeAll(async () => {
  workers.push(await startWorker('cpu', opts), await startWorker('gpu', opts));
  api = await startApi(opts);
  base = api.url.replace(/\/graphql$/, '');
});

afterAll(async () => {
  await api?.close();
  await Promise.all(workers.map((w) => w.stop()));
  await dropPrefix(redisUrl, prefix);
});

const ROW = Array.from({ length: 64 }, (_, i) => (i % 7) / 7);
const MLP_ROW = Array.from({ length: 512 }, (_, i) => Math.sin(i));

async function getJson(path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(base + path);
  return { status: res.status, body: await res.json() };
}

async function postJson(
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

/** A binary infer body: the JSON header, then each tensor's bytes. */
export function binaryBody(header: unknown, tensors: Uint8Array[]): { body: Buffer; headerLength: number } {
  const json = Buffer.from(JSON.stringify(header));
  return { body: Buffer.concat([json, ...tensors]), headerLength: json.length };
}

/** Splits a binary answer into its JSON header and the bytes after it. */
async function readBinary(res: Response): Promise<{ header: any; rest: Buffer }> {
  const buf = Buffer.from(await res.arrayBuffer());
  const n = Number(res.headers.get('inference-header-content-length'));
  return { header: JSON.parse(buf.toString('utf8', 0, n)), rest: buf.subarray(n) };
}

function f32(values: number[]): Buffer {
  const a = Float32Array.from(values);
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function floats(bytes: Buffer): number[] {
  const copy = Buffer.from(bytes);
  return Array.from(new Float32Array(copy.buffer, copy.byteOffset, copy.byteLength / 4));
}

describe('health and metadata', () => {
  it('answers server metadata with its extensions, liveness and readiness', async () => {
    const meta = await getJson('/v2');
    expect(meta.status).toBe(200);
    expect(meta.body).toMatchObject({ name: 'batchline', extensions: ['binary_tensor_data'] });
    expect(typeof meta.body.version).toBe('string');
    expect((await fetch(base + '/v2/health/live')).status).toBe(200);
    expect(await getJson('/v2/health/ready')).toEqual({ status: 200, body: { ready: true } });
  });

  it("answers a model's metadata, by name and by version", async () => {
    const expected = {
      name: 'spam-mlp',
      versions: ['1'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 64] }],
      outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, 2] }],
    };
    expect(await getJson('/v2/models/spam-mlp')).toEqual({ status: 200, body: expected });
    expect(await getJson('/v2/models/spam-mlp/versions/1')).toEqual({ status: 200, body: expected });
  });

  it('says a model is ready once a worker serves it', async () => {
    expect(await getJson('/v2/models/spam-mlp/ready')).toEqual({ status: 200, body: { name: 'spam-mlp', ready: true } });
    expect((await getJson('/v2/models/spam-mlp/versions/1/ready')).status).toBe(200);
  });

  it('answers 404 with an error for an unknown model, version or endpoint', async () => {
    const unknown = await getJson('/v2/models/nope');
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toMatch(/no model named 'nope'/);
    const version = await getJson('/v2/models/spam-mlp/versions/9');
    expect(version.status).toBe(404);
    expect(version.body.error).toMatch(/no version '9'/);
    expect((await getJson('/v2/models/nope/ready')).status).toBe(404);
    expect((await getJson('/v2/nothing')).status).toBe(404);
  });
});

describe('infer, JSON', () => {
  it('answers the outputs of a JSON request, echoing its id (flat and nested data alike)', async () => {
    const flat = await postJson('/v2/models/spam-mlp/infer', {
      id: 'req-1',
      inputs: [{ name: 'features', shape: [2, 64], datatype: 'FP32', data: [...ROW, ...ROW.map((v) => 1 - v)] }],
    });
    expect(flat.status).toBe(200);
    expect(flat.body).toMatchObject({ model_name: 'spam-mlp', model_version: '1', id: 'req-1' });
    expect(flat.body.outputs).toHaveLength(1);
    expect(flat.body.outputs[0]).toMatchObject({ name: 'probabilities', datatype: 'FP32', shape: [2, 2] });
    const [a, b, c, d] = flat.body.outputs[0].data as number[];
    expect(a + b).toBeCloseTo(1, 5);
    expect(c + d).toBeCloseTo(1, 5);
    const nested = await postJson('/v2/models/spam-mlp/versions/1/infer', {
      inputs: [{ name: 'features', shape: [2, 64], datatype: 'FP32', data: [ROW, ROW.map((v) => 1 - v)] }],
    });
    expect(nested.status).toBe(200);
    expect(nested.body.id).toBeUndefined();
    expect(nested.body.outputs[0].data).toEqual(flat.body.outputs[0].data);
  });

  it('answers only the outputs asked for, and refuses one the model lacks', async () => {
    const r = await postJson('/v2/models/spam-mlp/infer', {
      inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP32', data: ROW }],
      outputs: [{ name: 'probabilities' }],
    });
    expect(r.status).toBe(200);
    expect(r.body.outputs.map((o: { name: string }) => o.name)).toEqual(['probabilities']);
    const bad = await postJson('/v2/models/spam-mlp/infer', {
      inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP32', data: ROW }],
      outputs: [{ name: 'logits' }],
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatch(/no output 'logits'/);
  });

  it.each([
    ['an unknown input', { inputs: [{ name: 'x', shape: [1, 64], datatype: 'FP32', data: ROW }] }, /no input 'x'/],
    ['a wrong datatype', { inputs: [{ name: 'features', shape: [1, 64], datatype: 'INT32', data: ROW.map(() => 1) }] }, /expected FP32/],
    ['an unknown datatype', { inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP12', data: ROW }] }, /unknown datatype 'FP12'/],
    [
      'a shape its data does not fill',
      { inputs: [{ name: 'features', shape: [2, 64], datatype: 'FP32', data: ROW }] },
      /needs 128 values, got 64/,
    ],
    ['a wrong inner dimension', { inputs: [{ name: 'features', shape: [1, 63], datatype: 'FP32', data: ROW.slice(1) }] }, /expected 64/],
    [
      'nesting that breaks the shape',
      { inputs: [{ name: 'features', shape: [2, 64], datatype: 'FP32', data: [ROW, ROW.slice(1)] }] },
      /expected 64 items/,
    ],
    ['a string value', { inputs: [{ name: 'features', shape: [1, 2], datatype: 'FP32', data: ['a', 1] }] }, /expected a number/],
    ['no inputs', { inputs: [] }, /at least one input/],
    [
      'a timeout_ms that is not a positive integer',
      { inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP32', data: ROW }], parameters: { timeout_ms: -5 } },
      /timeout_ms: expected a positive integer/,
    ],
    [
      'too many rows',
      { inputs: [{ name: 'features', shape: [300, 64], datatype: 'FP32', data: Array(300 * 64).fill(0) }] },
      /at most 256 rows/,
    ],
  ])('answers 400 for %s', async (_, body, message) => {
    const r = await postJson('/v2/models/spam-mlp/infer', body);
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(message);
  });

  it('refuses a chunked body (no Content-Length) once it passes http.maxBodyBytes, with 413', async () => {
    const chunk = new Uint8Array(64 * 1024).fill(32);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        // Just over the limit, so the rest of the body is in flight when the answer comes.
        if (sent >= 17) return controller.close();
        sent++;
        controller.enqueue(chunk);
      },
    });
    const res = await fetch(base + '/v2/models/spam-mlp/infer', { method: 'POST', body, duplex: 'half' } as RequestInit);
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: string }).error).toMatch(/over 1048576 bytes/);
    expect(
      (await postJson('/v2/models/spam-mlp/infer', { inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP32', data: ROW }] })).status,
    ).toBe(200);
  });

  it('answers 400 for a body that is not JSON', async () => {
    const res = await fetch(base + '/v2/models/spam-mlp/infer', { method: 'POST', body: '{"inputs": [' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toMatch(/not JSON/);
  });

  it('answers 404 for an unknown model and 405 for a GET of infer', async () => {
    const r = await postJson('/v2/models/nope/infer', { inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP32', data: ROW }] });
    expect(r.status).toBe(404);
    expect(r.body.error).toMatch(/no model named 'nope'/);
    expect((await fetch(base + '/v2/models/spam-mlp/infer')).status).toBe(405);
  });
});

describe('infer, binary tensor data', () => {
  it('takes binary inputs and answers binary outputs, the same numbers as JSON', async () => {
    const json = await postJson('/v2/models/mlp-bench/infer', {
      inputs: [{ name: 'input', shape: [1, 512], datatype: 'FP32', data: MLP_ROW }],
    });
    expect(json.status).toBe(200);
    const { body, headerLength } = binaryBody(
      {
        id: 'bin-1',
        inputs: [{ name: 'input', shape: [1, 512], datatype: 'FP32', parameters: { binary_data_size: 2048 } }],
        outputs: [{ name: 'logits', parameters: { binary_data: true } }],
      },
      [f32(MLP_ROW)],
    );
    const res = await fetch(base + '/v2/models/mlp-bench/infer', {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) },
      body: new Uint8Array(body),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    const { header, rest } = await readBinary(res);
    expect(header).toEqual({
      model_name: 'mlp-bench',
      model_version: '1',
      id: 'bin-1',
      outputs: [{ name: 'logits', datatype: 'FP32', shape: [1, 10], parameters: { binary_data_size: 40 } }],
    });
    expect(rest.length).toBe(40);
    expect(floats(rest)).toEqual(json.body.outputs[0].data);
  });

  it('answers JSON outputs to a binary request unless binary is asked for, and all binary with binary_data_output', async () => {
    const { body, headerLength } = binaryBody(
      { inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP32', parameters: { binary_data_size: 256 } }] },
      [f32(ROW)],
    );
    const headers = { 'inference-header-content-length': String(headerLength) };
    const plain = await fetch(base + '/v2/models/spam-mlp/infer', { method: 'POST', headers, body: new Uint8Array(body) });
    expect(plain.status).toBe(200);
    expect(plain.headers.get('content-type')).toBe('application/json');
    const data = ((await plain.json()) as any).outputs[0].data as number[];
    const all = binaryBody(
      {
        inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP32', parameters: { binary_data_size: 256 } }],
        parameters: { binary_data_output: true },
      },
      [f32(ROW)],
    );
    const res = await fetch(base + '/v2/models/spam-mlp/infer', {
      method: 'POST',
      headers: { 'inference-header-content-length': String(all.headerLength) },
      body: new Uint8Array(all.body),
    });
    const { header, rest } = await readBinary(res);
    expect(header.outputs[0].parameters).toEqual({ binary_data_size: 8 });
    expect(floats(rest)).toEqual(data);
  });

  /** Posts a raw body over one keep-alive connection, so that a test can see it stays usable. */
  function rawPost(agentPath: string, body: Buffer, headers: Record<string, string>): Promise<{ status: number; text: string }> {
    const url = new URL(base + agentPath);
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-length': body.length, ...headers } },
        (res) => {
          let text = '';
          res.setEncoding('latin1');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode!, text }));
        },
      );
      req.once('error', reject);
      req.end(body);
    });
  }

  const header = { inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP32', parameters: { binary_data_size: 256 } }] };

  it.each([
    ['a header length past the body', () => binaryBody(header, [f32(ROW)]), (n: number, b: Buffer) => String(b.length + 10), /holds only/],
    ['a header length that cuts the JSON', () => binaryBody(header, [f32(ROW)]), (n: number) => String(n - 5), /not a JSON header/],
    ['a header length that is not a number', () => binaryBody(header, [f32(ROW)]), () => 'abc', /expected a byte count/],
    ['a truncated body', () => binaryBody(header, [f32(ROW).subarray(0, 200)]), (n: number) => String(n), /run past|truncated/],
    [
      'extra bytes after the tensors',
      () => binaryBody(header, [f32(ROW), Buffer.alloc(8)]),
      (n: number) => String(n),
      /add up to 256 bytes, but 264/,
    ],
    [
      'a binary_data_size that does not match the shape',
      () => binaryBody({ inputs: [{ ...header.inputs[0], parameters: { binary_data_size: 252 } }] }, [f32(ROW).subarray(0, 252)]),
      (n: number) => String(n),
      /needs 256 bytes, got 252/,
    ],
    [
      'an unknown datatype',
      () => binaryBody({ inputs: [{ ...header.inputs[0], datatype: 'FP8' }] }, [f32(ROW)]),
      (n: number) => String(n),
      /unknown datatype 'FP8'/,
    ],
    [
      'binary data with no header length',
      () => binaryBody(header, [f32(ROW)]),
      () => undefined,
      /not JSON|needs the Inference-Header-Content-Length/,
    ],
  ])('answers 400 for %s, and the server stays usable', async (_, make, length, message) => {
    const { body, headerLength } = make();
    const n = length(headerLength, body);
    const bad = await rawPost('/v2/models/spam-mlp/infer', body, n === undefined ? {} : { 'inference-header-content-length': n });
    expect(bad.status).toBe(400);
    expect((JSON.parse(bad.text) as { error: string }).error).toMatch(message);
    const good = binaryBody(header, [f32(ROW)]);
    const ok = await rawPost('/v2/models/spam-mlp/infer', good.body, { 'inference-header-content-length': String(good.headerLength) });
    expect(ok.status).toBe(200);
  });
});

describe('one core', () => {
  it('counts inference protocol requests under their own operation label', async () => {
    await postJson('/v2/models/spam-mlp/infer', { inputs: [{ name: 'features', shape: [1, 64], datatype: 'FP32', data: ROW }] });
    const text = await (await fetch(base + '/metrics')).text();
    expect(text).toMatch(/batchline_requests_total\{model="spam-mlp",operation="infer_rest",outcome="ok",role="api"\} [1-9]/);
    expect(text).toMatch(/batchline_requests_total\{model="spam-mlp",operation="infer_rest",outcome="BAD_USER_INPUT",role="api"\} [1-9]/);
  });

  it('answers the same numbers as GraphQL', async () => {
    const g = await gql<{ predict: { outputs: { data: number[] }[] } }>(
      api.url,
      `query($i: PredictionInput!) { predict(model: "mlp-bench", input: $i) { outputs { data } } }`,
      {
        i: { features: MLP_ROW },
      },
    );
    const r = await postJson('/v2/models/mlp-bench/infer', {
      inputs: [{ name: 'input', shape: [1, 512], datatype: 'FP32', data: MLP_ROW }],
    });
    expect(r.body.outputs[0].data).toEqual(g.body.data!.predict.outputs[0].data);
  });
});
