/**
 * The Open Inference Protocol over gRPC (`inference.GRPCInferenceService` through
 * @grpc/grpc-js as the client), and what the doors share: one model answers the same numbers
 * through GraphQL, REST JSON, REST binary and gRPC; each error class on each protocol (a
 * worker's unusable answer as 502 / INTERNAL included); auth and limits on REST and gRPC; a
 * gRPC message over the size limit. Real Redis, BullMQ, workers and onnxruntime-node.
 */
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { gql } from '../support/clients.ts';
import { addModel, tempRepository } from '../support/model-repo.ts';
import { encodeDenseModel } from '../../scripts/models/onnx-writer.ts';
import {
  REPO_MODELS,
  dropPrefix,
  listeningPort,
  spawnCli,
  startApi,
  startWorker,
  uniquePrefix,
  type Child,
  type RunningApi,
} from '../../harness/stack.ts';
import { freePort } from '../../cli/local-redis.ts';
import { until } from '../support/wait.ts';
import { startOtlpReceiver } from '../support/otlp-receiver.ts';
import { loadInferenceService } from '../../server/oip/grpc.ts';
import { hashApiKey } from '../../server/auth.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('oip-grpc');
const workers: Child[] = [];
/** Plain: no auth, no limits. */
let api: RunningApi;
/** Auth on: keys `all` (every model) and `spam` (spam-mlp only). */
let secured: RunningApi;
/** Auth on, 1 request a second with a burst of 3 per key, 64 KiB messages and bodies. */
let limited: RunningApi;

const MLP_ROW = Array.from({ length: 512 }, (_, i) => Math.cos(i / 3));
const ROW = Array.from({ length: 64 }, (_, i) => (i % 5) / 5);

/** A linear 4 -> `out` model (x -> y), weights fixed. */
function linear(out: number): Uint8Array {
  return encodeDenseModel({
    graphName: 'linear',
    inputName: 'x',
    outputName: 'y',
    softmax: false,
    layers: [
      {
        inFeatures: 4,
        outFeatures: out,
        weight: Float32Array.from({ length: 4 * out }, (_, i) => (i - 6) / 4),
        bias: Float32Array.from({ length: out }, (_, i) => i / 2),
        activation: 'none',
      },
    ],
  });
}
const linearConfig = (out: number) => ({
  pool: 'cpu',
  task: 'raw',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, out] }],
  cache: { enabled: false },
  retry: { attempts: 1, backoffMs: 0 },
});

/** Two repositories: the workers' and the APIs'. `skew` answers 3 values a row where the API expects 4; `orphan` no worker serves. */
function repositories(): { workerModels: string; apiModels: string } {
  const workerModels = tempRepository();
  const apiModels = tempRepository();
  for (const root of [workerModels, apiModels])
    for (const m of ['spam-mlp', 'mlp-bench', 'name-gender']) cpSync(join(REPO_MODELS, m), join(root, m), { recursive: true });
  addModel(workerModels, 'skew', '1', linear(3), linearConfig(3));
  addModel(apiModels, 'skew', '1', linear(4), linearConfig(4));
  addModel(apiModels, 'orphan', '1', linear(3), linearConfig(3));
  return { workerModels, apiModels };
}

const KEYS = { all: 'key-all-0123456789', spam: 'key-spam-0123456789', rate: 'key-rate-0123456789', size: 'key-size-0123456789' };

beforeAll(async () => {
  const { workerModels, apiModels } = repositories();
  const base = { redisUrl, prefix };
  workers.push(await startWorker('cpu', { ...base, models: workerModels }), await startWorker('gpu', { ...base, models: workerModels }));
  api = await startApi({ ...base, models: apiModels, grpc: true });
  secured = await startApi({
    ...base,
    models: apiModels,
    grpc: true,
    env: {
      BATCHLINE_AUTH: 'true',
      BATCHLINE_API_KEYS: `all:${hashApiKey(KEYS.all)}:predict:*;spam:${hashApiKey(KEYS.spam)}:predict:spam-mlp`,
    },
  });
  limited = await startApi({
    ...base,
    models: apiModels,
    grpc: true,
    env: {
      BATCHLINE_AUTH: 'true',
      BATCHLINE_API_KEYS: `rate:${hashApiKey(KEYS.rate)}:predict:*;size:${hashApiKey(KEYS.size)}:predict:*`,
      BATCHLINE_RATE_LIMIT_PER_SECOND: '1',
      BATCHLINE_RATE_LIMIT_BURST: '3',
      BATCHLINE_GRPC_MAX_MESSAGE_BYTES: '65536',
      BATCHLINE_MAX_BODY_BYTES: '65536',
    },
  });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all([api, secured, limited].map((a) => a?.close()));
  await Promise.all(workers.map((w) => w.stop()));
  await dropPrefix(redisUrl, prefix);
});

type Service = grpc.Client & Record<string, (...args: unknown[]) => unknown>;
const ServiceClient = (loadInferenceService() as unknown as { inference: { GRPCInferenceService: grpc.ServiceClientConstructor } })
  .inference.GRPCInferenceService;
const clients: grpc.Client[] = [];

function client(address: string): Service {
  const c = new ServiceClient(address, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': -1 }) as Service;
  clients.push(c);
  return c;
}

interface CallResult {
  error?: grpc.ServiceError;
  response?: any;
}

/** A unary call, its error kept rather than thrown. */
function call(c: Service, method: string, request: unknown, options: { key?: string; deadlineMs?: number } = {}): Promise<CallResult> {
  const metadata = new grpc.Metadata();
  if (options.key) metadata.set('x-api-key', options.key);
  const callOptions = options.deadlineMs ? { deadline: Date.now() + options.deadlineMs } : {};
  return new Promise((resolve) => {
    c[method](request, metadata, callOptions, (error: grpc.ServiceError | null, response: unknown) =>
      resolve(error ? { error } : { response }),
    );
  });
}

function f32(values: number[]): Buffer {
  const a = Float32Array.from(values);
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function floats(bytes: Buffer): number[] {
  const copy = Buffer.from(bytes);
  return Array.from(new Float32Array(copy.buffer, copy.byteOffset, copy.byteLength / 4));
}

const rest = (a: RunningApi) => a.url.replace(/\/graphql$/, '');

async function postInfer(a: RunningApi, model: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${rest(a)}/v2/models/${model}/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

const spamInput = (rows = 1) => ({ name: 'features', datatype: 'FP32', shape: [rows, 64] });

describe('gRPC health and metadata', () => {
  it('answers ServerLive, ServerReady, ServerMetadata', async () => {
    const c = client(api.grpc!);
    expect((await call(c, 'ServerLive', {})).response).toEqual({ live: true });
    expect((await call(c, 'ServerReady', {})).response).toEqual({ ready: true });
    const meta = (await call(c, 'ServerMetadata', {})).response;
    expect(meta).toMatchObject({ name: 'batchline', extensions: ['binary_tensor_data'] });
  });

  it('answers ModelMetadata and ModelReady, and NOT_FOUND for an unknown model', async () => {
    const c = client(api.grpc!);
    const meta = (await call(c, 'ModelMetadata', { name: 'spam-mlp', version: '' })).response;
    expect(meta).toEqual({
      name: 'spam-mlp',
      versions: ['1'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 64] }],
      outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, 2] }],
    });
    expect((await call(c, 'ModelReady', { name: 'spam-mlp', version: '1' })).response).toEqual({ ready: true });
    expect((await call(c, 'ModelReady', { name: 'orphan' })).response).toEqual({ ready: false });
    const missing = await call(c, 'ModelMetadata', { name: 'nope' });
    expect(missing.error?.code).toBe(grpc.status.NOT_FOUND);
    expect(missing.error?.details).toMatch(/no model named 'nope'/);
  });
});

describe('gRPC ModelInfer', () => {
  it('answers raw_output_contents to raw_input_contents, and typed contents to contents, with the same numbers', async () => {
    const c = client(api.grpc!);
    const raw = await call(c, 'ModelInfer', {
      model_name: 'spam-mlp',
      id: 'g-1',
      inputs: [spamInput(2)],
      raw_input_contents: [f32([...ROW, ...ROW.map((v) => 1 - v)])],
    });
    expect(raw.error).toBeUndefined();
    expect(raw.response).toMatchObject({ model_name: 'spam-mlp', model_version: '1', id: 'g-1' });
    expect(raw.response.outputs).toEqual([expect.objectContaining({ name: 'probabilities', datatype: 'FP32', shape: [2, 2] })]);
    const values = floats(raw.response.raw_output_contents[0]);
    expect(values).toHaveLength(4);
    expect(values[0] + values[1]).toBeCloseTo(1, 5);
    const typed = await call(c, 'ModelInfer', {
      model_name: 'spam-mlp',
      model_version: '1',
      inputs: [{ ...spamInput(2), contents: { fp32_contents: [...ROW, ...ROW.map((v) => 1 - v)] } }],
      outputs: [{ name: 'probabilities' }],
    });
    expect(typed.error).toBeUndefined();
    expect(typed.response.raw_output_contents).toEqual([]);
    expect(typed.response.outputs[0].contents.fp32_contents).toEqual(values);
  });

  it('holds GraphQL, REST JSON, REST binary and gRPC to the same numbers', async () => {
    const graphql = await gql<{ predict: { outputs: { data: number[] }[] } }>(
      api.url,
      `query($i: PredictionInput!) { predict(model: "mlp-bench", input: $i) { outputs { data } } }`,
      { i: { features: MLP_ROW } },
    );
    const fromGraphql = graphql.body.data!.predict.outputs[0].data;
    const json = await postInfer(api, 'mlp-bench', { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 512], data: MLP_ROW }] });
    const header = Buffer.from(
      JSON.stringify({
        inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 512], parameters: { binary_data_size: 2048 } }],
        parameters: { binary_data_output: true },
      }),
    );
    const binRes = await fetch(`${rest(api)}/v2/models/mlp-bench/infer`, {
      method: 'POST',
      headers: { 'inference-header-content-length': String(header.length) },
      body: new Uint8Array(Buffer.concat([header, f32(MLP_ROW)])),
    });
    const bin = Buffer.from(await binRes.arrayBuffer());
    const fromBinary = floats(bin.subarray(Number(binRes.headers.get('inference-header-content-length'))));
    const g = await call(client(api.grpc!), 'ModelInfer', {
      model_name: 'mlp-bench',
      inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 512] }],
      raw_input_contents: [f32(MLP_ROW)],
    });
    const fromGrpc = floats(g.response.raw_output_contents[0]);
    expect(fromGraphql).toHaveLength(10);
    expect(json.body.outputs[0].data).toEqual(fromGraphql);
    expect(fromBinary).toEqual(fromGraphql);
    expect(fromGrpc).toEqual(fromGraphql);
  });

  it('a text model takes its texts as one BYTES input, and answers the same numbers through all four doors', async () => {
    const names = ['Maria', 'John'];
    const meta = (await call(client(api.grpc!), 'ModelMetadata', { name: 'name-gender' })).response;
    expect(meta.inputs).toEqual([{ name: 'text', datatype: 'BYTES', shape: [-1] }]);
    const graphql = await gql<{ predict: { outputs: { data: number[] }[] } }>(
      api.url,
      `query($i: PredictionInput!) { predict(model: "name-gender", input: $i) { outputs { data } } }`,
      { i: { texts: names } },
    );
    const expected = graphql.body.data!.predict.outputs[0].data;
    expect(expected).toHaveLength(4);
    const json = await postInfer(api, 'name-gender', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [2], data: names }] });
    expect(json.status).toBe(200);
    expect(json.body.outputs[0].data).toEqual(expected);
    // Binary BYTES: each element a 4-byte little-endian length, then its bytes.
    const elements = Buffer.concat(
      names.flatMap((n) => {
        const len = Buffer.alloc(4);
        len.writeUInt32LE(Buffer.byteLength(n));
        return [len, Buffer.from(n)];
      }),
    );
    const header = Buffer.from(
      JSON.stringify({
        inputs: [{ name: 'text', datatype: 'BYTES', shape: [2, 1], parameters: { binary_data_size: elements.length } }],
        parameters: { binary_data_output: true },
      }),
    );
    const binRes = await fetch(`${rest(api)}/v2/models/name-gender/infer`, {
      method: 'POST',
      headers: { 'inference-header-content-length': String(header.length) },
      body: new Uint8Array(Buffer.concat([header, elements])),
    });
    expect(binRes.status).toBe(200);
    const bin = Buffer.from(await binRes.arrayBuffer());
    expect(floats(bin.subarray(Number(binRes.headers.get('inference-header-content-length'))))).toEqual(expected);
    const typed = await call(client(api.grpc!), 'ModelInfer', {
      model_name: 'name-gender',
      inputs: [{ name: 'text', datatype: 'BYTES', shape: [2], contents: { bytes_contents: names.map((n) => Buffer.from(n)) } }],
    });
    expect(typed.response.outputs[0].contents.fp32_contents).toEqual(expected);
    const raw = await call(client(api.grpc!), 'ModelInfer', {
      model_name: 'name-gender',
      inputs: [{ name: 'text', datatype: 'BYTES', shape: [2] }],
      raw_input_contents: [elements],
    });
    expect(floats(raw.response.raw_output_contents[0])).toEqual(expected);
    // Text for a numeric model, and a length prefix that runs past the bytes, are 400s.
    const wrong = await postInfer(api, 'spam-mlp', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: ['hi'] }] });
    expect(wrong.status).toBe(400);
    expect(wrong.body.error).toMatch(/takes no text/);
    const cut = await call(client(api.grpc!), 'ModelInfer', {
      model_name: 'name-gender',
      inputs: [{ name: 'text', datatype: 'BYTES', shape: [2] }],
      raw_input_contents: [elements.subarray(0, elements.length - 2)],
    });
    expect(cut.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(cut.error?.details).toMatch(/run past/);
  });

  it('counts gRPC requests under their own operation label', async () => {
    const text = await (await fetch(`${rest(api)}/metrics`)).text();
    expect(text).toMatch(/batchline_requests_total\{model="mlp-bench",operation="infer_grpc",outcome="ok",role="api"\} [1-9]/);
  });
});

describe('each error class on each protocol', () => {
  const grpcCase = (request: Record<string, unknown>) => call(client(api.grpc!), 'ModelInfer', request);
  it.each([
    [
      'an unknown model',
      { model_name: 'nope', inputs: [spamInput()], raw_input_contents: [f32(ROW)] },
      404,
      grpc.status.NOT_FOUND,
      /no model named 'nope'/,
    ],
    [
      'an unknown version',
      { model_name: 'spam-mlp', model_version: '7', inputs: [spamInput()], raw_input_contents: [f32(ROW)] },
      404,
      grpc.status.NOT_FOUND,
      /no version '7'/,
    ],
    [
      'a shape the model does not take',
      { model_name: 'spam-mlp', inputs: [{ ...spamInput(), shape: [1, 32] }], raw_input_contents: [f32(ROW.slice(0, 32))] },
      400,
      grpc.status.INVALID_ARGUMENT,
      /expected 64/,
    ],
    [
      'an unknown datatype',
      { model_name: 'spam-mlp', inputs: [{ ...spamInput(), datatype: 'FP12' }], raw_input_contents: [f32(ROW)] },
      400,
      grpc.status.INVALID_ARGUMENT,
      /unknown datatype 'FP12'/,
    ],
    [
      'raw bytes that do not fill the shape',
      { model_name: 'spam-mlp', inputs: [spamInput()], raw_input_contents: [f32(ROW).subarray(0, 100)] },
      400,
      grpc.status.INVALID_ARGUMENT,
      /needs 256 bytes, got 100|needs 64 values, got 25/,
    ],
    [
      'a model no live worker serves',
      { model_name: 'orphan', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4] }], raw_input_contents: [f32([1, 2, 3, 4])] },
      503,
      grpc.status.UNAVAILABLE,
      /no live worker serves orphan/,
    ],
    [
      "a worker's answer that breaks the model's config",
      { model_name: 'skew', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4] }], raw_input_contents: [f32([1, 2, 3, 4])] },
      502,
      grpc.status.INTERNAL,
      /model 'skew' version 1 answered output 'y' of shape \[1,3\]/,
    ],
  ])('%s: the same error over REST (JSON and binary) and gRPC', async (_, request, status, code, message) => {
    const g = await grpcCase(request);
    expect(g.error?.code).toBe(code);
    expect(g.error?.details).toMatch(message);
    const req = request as { model_name: string; model_version?: string; inputs: Record<string, unknown>[]; raw_input_contents: Buffer[] };
    const path = `${rest(api)}/v2/models/${req.model_name}${req.model_version ? `/versions/${req.model_version}` : ''}/infer`;
    const raw = req.raw_input_contents[0];
    const json = await fetch(path, {
      method: 'POST',
      body: JSON.stringify({ inputs: [{ ...req.inputs[0], data: floats(raw) }] }),
    });
    expect(json.status).toBe(status);
    expect(((await json.json()) as { error: string }).error).toMatch(message);
    const header = Buffer.from(JSON.stringify({ inputs: [{ ...req.inputs[0], parameters: { binary_data_size: raw.length } }] }));
    const binary = await fetch(path, {
      method: 'POST',
      headers: { 'inference-header-content-length': String(header.length) },
      body: new Uint8Array(Buffer.concat([header, raw])),
    });
    expect(binary.status).toBe(status);
    expect(((await binary.json()) as { error: string }).error).toMatch(message);
  });

  it('REST: a timeout_ms the work cannot meet is 504 with an error', async () => {
    const r = await postInfer(api, 'mlp-bench', {
      inputs: [{ name: 'input', datatype: 'FP32', shape: [256, 512], data: Array(256 * 512).fill(0.5) }],
      parameters: { timeout_ms: 1 },
    });
    expect(r.status).toBe(504);
    expect(r.body.error).toEqual(expect.any(String));
  });

  it('answers DEADLINE_EXCEEDED when the client deadline passes', async () => {
    const g = await call(
      client(api.grpc!),
      'ModelInfer',
      {
        model_name: 'mlp-bench',
        inputs: [{ name: 'input', datatype: 'FP32', shape: [256, 512] }],
        raw_input_contents: [f32(Array(256 * 512).fill(0.5))],
      },
      { deadlineMs: 1 },
    );
    expect(g.error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    // The server is still there.
    expect((await call(client(api.grpc!), 'ServerLive', {})).response).toEqual({ live: true });
  });
});

describe('auth', () => {
  const infer = {
    model_name: 'mlp-bench',
    inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 512] }],
    raw_input_contents: [f32(MLP_ROW)],
  };

  it('gRPC: UNAUTHENTICATED without a key or with a wrong one, PERMISSION_DENIED for a model the key may not use', async () => {
    const c = client(secured.grpc!);
    expect((await call(c, 'ModelInfer', infer)).error?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect((await call(c, 'ModelInfer', infer, { key: 'wrong' })).error?.code).toBe(grpc.status.UNAUTHENTICATED);
    const denied = await call(c, 'ModelInfer', infer, { key: KEYS.spam });
    expect(denied.error?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(denied.error?.details).toMatch(/may not use model 'mlp-bench'/);
    expect((await call(c, 'ModelMetadata', { name: 'mlp-bench' }, { key: KEYS.spam })).error?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect((await call(c, 'ModelInfer', infer, { key: KEYS.all })).error).toBeUndefined();
    // Health needs no key.
    expect((await call(c, 'ServerLive', {})).response).toEqual({ live: true });
  });

  it('REST: 401 without a key, 403 for a model the key may not use, 200 with one that may', async () => {
    const body = { inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 512], data: MLP_ROW }] };
    expect((await postInfer(secured, 'mlp-bench', body)).status).toBe(401);
    expect((await postInfer(secured, 'mlp-bench', body, { 'x-api-key': 'wrong' })).status).toBe(401);
    const denied = await postInfer(secured, 'mlp-bench', body, { 'x-api-key': KEYS.spam });
    expect(denied.status).toBe(403);
    expect(denied.body.error).toMatch(/may not use model 'mlp-bench'/);
    expect((await fetch(`${rest(secured)}/v2/models/mlp-bench`, { headers: { 'x-api-key': KEYS.spam } })).status).toBe(403);
    expect((await postInfer(secured, 'mlp-bench', body, { authorization: `Bearer ${KEYS.all}` })).status).toBe(200);
    expect((await fetch(`${rest(secured)}/v2/health/live`)).status).toBe(200);
  });
});

describe('limits', () => {
  it('rate limits REST and gRPC per key: 429 with Retry-After, RESOURCE_EXHAUSTED', async () => {
    const body = { inputs: [{ ...spamInput(), data: ROW }] };
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${rest(limited)}/v2/models/spam-mlp/infer`, {
        method: 'POST',
        headers: { 'x-api-key': KEYS.rate },
        body: JSON.stringify(body),
      });
      statuses.push(res.status);
      if (res.status === 429) retryAfter = res.headers.get('retry-after');
      await res.arrayBuffer();
    }
    expect(statuses).toContain(429);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    const c = client(limited.grpc!);
    const codes: (number | undefined)[] = [];
    for (let i = 0; i < 6; i++)
      codes.push(
        (await call(c, 'ModelInfer', { model_name: 'spam-mlp', inputs: [spamInput()], raw_input_contents: [f32(ROW)] }, { key: KEYS.rate }))
          .error?.code,
      );
    expect(codes).toContain(grpc.status.RESOURCE_EXHAUSTED);
  });

  it('refuses a gRPC message over grpc.maxMessageBytes with RESOURCE_EXHAUSTED, and a REST body over the limit with 413; both stay usable', async () => {
    const c = client(limited.grpc!);
    const big = await call(
      c,
      'ModelInfer',
      { model_name: 'spam-mlp', inputs: [spamInput(300)], raw_input_contents: [f32(Array(300 * 64).fill(0.1))] },
      { key: KEYS.size },
    );
    expect(big.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    const ok = await call(
      c,
      'ModelInfer',
      { model_name: 'spam-mlp', inputs: [spamInput()], raw_input_contents: [f32(ROW)] },
      { key: KEYS.size },
    );
    expect(ok.error).toBeUndefined();
    const res = await fetch(`${rest(limited)}/v2/models/spam-mlp/infer`, {
      method: 'POST',
      headers: { 'x-api-key': KEYS.size },
      body: JSON.stringify({ inputs: [{ ...spamInput(300), data: Array(300 * 64).fill(0.1) }] }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: string }).error).toMatch(/over 65536 bytes/);
    expect((await postInfer(limited, 'spam-mlp', { inputs: [{ ...spamInput(), data: ROW }] }, { 'x-api-key': KEYS.size })).status).toBe(
      200,
    );
  });
});

describe('batchline serve', () => {
  it('serves gRPC on grpc.port beside HTTP, answers a call in flight at SIGTERM, and exits cleanly', async () => {
    const port = await freePort();
    const child = await spawnCli(
      ['serve', '--port', '0'],
      { redisUrl, prefix, models: repositories().apiModels, env: { BATCHLINE_HOST: '127.0.0.1', BATCHLINE_GRPC_PORT: String(port) } },
      /"msg":"API listening"/,
    );
    try {
      expect(child.output()).toContain(`"grpcPort":${port}`);
      const c = client(`127.0.0.1:${port}`);
      expect((await call(c, 'ServerLive', {})).response).toEqual({ live: true });
      // One request log line per call, as for GraphQL: REST's through the HTTP adapter, gRPC's its own.
      const httpPort = listeningPort(child);
      const rest = await fetch(`http://127.0.0.1:${httpPort}/v2/models/spam-mlp/infer`, {
        method: 'POST',
        headers: { 'x-request-id': 'rest-line-1' },
        body: JSON.stringify({ inputs: [{ ...spamInput(), data: ROW }] }),
      });
      expect(rest.status).toBe(200);
      expect((await call(c, 'ModelMetadata', { name: 'nope' })).error?.code).toBe(grpc.status.NOT_FOUND);
      await until(
        () => /"msg":"request"/.test(child.output()) && child.output().includes('"code":"MODEL_NOT_FOUND"'),
        () => 'the request log lines',
      );
      const lines = child
        .output()
        .split('\n')
        .filter((l) => l.includes('"msg":"request"'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines).toEqual(
        expect.arrayContaining([
          expect.objectContaining({
            requestId: 'rest-line-1',
            path: '/v2/models/spam-mlp/infer',
            operation: 'infer_rest',
            model: 'spam-mlp',
            status: 200,
          }),
          expect.objectContaining({ transport: 'grpc', method: 'ServerLive', status: 'OK' }),
          expect.objectContaining({
            transport: 'grpc',
            method: 'ModelMetadata',
            model: 'nope',
            status: 'NOT_FOUND',
            code: 'MODEL_NOT_FOUND',
          }),
        ]),
      );
      const inFlight = call(c, 'ModelInfer', { model_name: 'spam-mlp', inputs: [spamInput()], raw_input_contents: [f32(ROW)] });
      // SIGTERM once the call has reached the server: its answer still comes.
      await new Promise((r) => setTimeout(r, 5));
      const exited = child.stop();
      const answer = await inFlight;
      expect(answer.error?.code ?? grpc.status.OK).toBeOneOf([grpc.status.OK, grpc.status.UNAVAILABLE]);
      expect(await exited).toBe(0);
      expect(child.output()).toContain('API stopped');
    } finally {
      await child.kill();
    }
  });
});

describe('tracing', () => {
  it("each door's request is a server span continuing the caller's traceparent, with the predict under it", async () => {
    const receiver = await startOtlpReceiver();
    const port = await freePort();
    const child = await spawnCli(
      ['serve', '--port', '0'],
      {
        redisUrl,
        prefix,
        models: repositories().apiModels,
        env: {
          BATCHLINE_HOST: '127.0.0.1',
          BATCHLINE_GRPC_PORT: String(port),
          BATCHLINE_TRACING: 'true',
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
          OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
          OTEL_BSP_SCHEDULE_DELAY: '50',
        },
      },
      /"msg":"API listening"/,
    );
    try {
      const restTrace = '4bf92f3577b34da6a3ce929d0e0e4737';
      const grpcTrace = '4bf92f3577b34da6a3ce929d0e0e4738';
      const parent = '00f067aa0ba902b7';
      const res = await fetch(`http://127.0.0.1:${listeningPort(child)}/v2/models/spam-mlp/infer`, {
        method: 'POST',
        headers: { traceparent: `00-${restTrace}-${parent}-01` },
        body: JSON.stringify({ inputs: [{ ...spamInput(), data: ROW }] }),
      });
      expect(res.status).toBe(200);
      const metadata = new grpc.Metadata();
      metadata.set('traceparent', `00-${grpcTrace}-${parent}-01`);
      const c = client(`127.0.0.1:${port}`);
      const answer = await new Promise<unknown>((resolve, reject) =>
        c.ModelInfer(
          { model_name: 'spam-mlp', inputs: [spamInput()], raw_input_contents: [f32(ROW)] },
          metadata,
          (e: unknown, r: unknown) => (e ? reject(e as Error) : resolve(r)),
        ),
      );
      expect(answer).toBeDefined();
      const spans = (trace: string) => receiver.spans.filter((x) => x.traceId === trace);
      await until(
        () =>
          ['POST /v2/models/spam-mlp/infer', 'inference.GRPCInferenceService/ModelInfer'].every((n, i) =>
            spans([restTrace, grpcTrace][i]).some((x) => x.name === n),
          ) && spans(grpcTrace).some((x) => x.name === 'predict spam-mlp'),
        () => `the doors' spans in ${JSON.stringify(receiver.spans.map((x) => x.name))}`,
        20_000,
      );
      for (const [trace, name] of [
        [restTrace, 'POST /v2/models/spam-mlp/infer'],
        [grpcTrace, 'inference.GRPCInferenceService/ModelInfer'],
      ]) {
        const door = spans(trace).find((x) => x.name === name)!;
        expect(door).toMatchObject({ kind: 2, parentSpanId: parent });
        await until(
          () => spans(trace).some((x) => x.name === 'predict spam-mlp'),
          () => `predict spam-mlp in ${trace}`,
          20_000,
        );
        expect(spans(trace).find((x) => x.name === 'predict spam-mlp')!.parentSpanId).toBe(door.spanId);
      }
      expect(spans(grpcTrace).find((x) => x.name === 'inference.GRPCInferenceService/ModelInfer')!.attributes).toMatchObject({
        'rpc.system': 'grpc',
        'rpc.method': 'ModelInfer',
        'rpc.grpc.status_code': 0,
      });
    } finally {
      await child.stop();
      await receiver.close();
    }
  });
});
