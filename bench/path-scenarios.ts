/**
 * What `npm run bench:path` sends: the scenarios, their GraphQL bodies (built once, a few
 * different inputs per scenario so no run is one input repeated, except the cache hit, which
 * is that on purpose), and how a sampled answer is judged.
 */
import { mulberry32 } from '../scripts/models/prng.ts';
import { loadSpamSplit, spamFeatures } from '../scripts/models/spam-dataset.ts';

/** Distinct inputs a scenario rotates among. */
const INPUTS = 16;

export interface HttpScenario {
  kind: 'http';
  id: string;
  title: string;
  connections: number;
  /** GraphQL (JSON) bodies, or the inference protocol's binary ones. */
  bodies: (string | Buffer)[];
  /** Where they go: `/graphql` unless said. */
  path?: string;
  /** Request headers, JSON's unless said. */
  headers?: Record<string, string>;
  /** Model whose `batchline_requests_total` the API counts the scenario's answers under. */
  model?: string;
  /** The `operation` label the API counts them under: `predict` unless said. */
  operation?: string;
  /** Why a sampled answer's `data` is wrong, or undefined when it is right. `index` counts the samples. */
  check: (data: Record<string, unknown>, index: number) => string | undefined;
  /** Instead of `check`: why a sampled raw answer is wrong (the inference protocol's binary answers). */
  checkRaw?: (answer: { status: number; headers: Headers; body: Buffer }, index: number) => string | undefined;
}

/** The inference protocol's ModelInfer over gRPC, from h2load (bench/h2load.ts): one prepared message, one call in flight a connection. */
export interface GrpcScenario {
  kind: 'grpc';
  id: string;
  title: string;
  connections: number;
  model: string;
  /** The ModelInferRequest, as @grpc/proto-loader takes it (one row in `raw_input_contents`). */
  request: Record<string, unknown>;
  /** FP32 values of the one output each answer must carry. */
  outputWidth: number;
}

/** A ModelInfer request of one FP32 row as raw bytes. */
function grpcInfer(model: string, input: string, row: Float32Array): Record<string, unknown> {
  return {
    model_name: model,
    inputs: [{ name: input, datatype: 'FP32', shape: [1, row.length] }],
    raw_input_contents: [Buffer.from(row.buffer, row.byteOffset, row.byteLength)],
  };
}

export interface WsScenario {
  kind: 'ws';
  id: string;
  title: string;
  connections: number;
  model: string;
  rowWidth: number;
}

export interface CeilingScenario {
  kind: 'ceiling';
  id: string;
  title: string;
}

export type Scenario = HttpScenario | WsScenario | GrpcScenario | CeilingScenario;

/** A binary infer body (the inference protocol's binary tensor data): the JSON header, then the row's bytes; the output asked for as bytes. */
function binaryInfer(input: string, row: Float32Array): { body: Buffer; headerLength: number } {
  const header = Buffer.from(
    JSON.stringify({
      inputs: [{ name: input, shape: [1, row.length], datatype: 'FP32', parameters: { binary_data_size: row.byteLength } }],
      parameters: { binary_data_output: true },
    }),
  );
  return { body: Buffer.concat([header, Buffer.from(row.buffer, row.byteOffset, row.byteLength)]), headerLength: header.length };
}

/** A binary infer answer with one output of `width` FP32 values, finite. */
function binaryAnswer(width: number) {
  return ({ status, headers, body }: { status: number; headers: Headers; body: Buffer }): string | undefined => {
    if (status !== 200) return `HTTP ${status}: ${body.toString().slice(0, 200)}`;
    const n = Number(headers.get('inference-header-content-length'));
    if (!(n > 0)) return 'no Inference-Header-Content-Length';
    const bytes = body.subarray(n);
    if (bytes.length !== width * 4) return `${bytes.length} output bytes, expected ${width * 4}`;
    const values = new Float32Array(Uint8Array.from(bytes).buffer);
    return values.every(Number.isFinite) ? undefined : 'non-finite output';
  };
}

/** An inference protocol REST scenario with binary tensor data: one FP32 row a request. */
function restBinary(id: string, title: string, model: string, input: string, rows: Float32Array[], outputWidth: number): HttpScenario {
  const bodies = rows.map((r) => binaryInfer(input, r));
  // The JSON header is the same for every row: one header length for all.
  const lengths = new Set(bodies.map((b) => b.headerLength));
  if (lengths.size !== 1) throw new Error(`${id}: bodies with different header lengths`);
  return {
    kind: 'http',
    id,
    title,
    connections: 64,
    bodies: bodies.map((b) => b.body),
    path: `/v2/models/${model}/infer`,
    headers: { 'Content-Type': 'application/octet-stream', 'Inference-Header-Content-Length': String([...lengths][0]) },
    model,
    operation: 'infer_rest',
    check: () => 'a binary answer is judged by checkRaw',
    checkRaw: binaryAnswer(outputWidth),
  };
}

const body = (query: string, variables?: Record<string, unknown>): string => JSON.stringify(variables ? { query, variables } : { query });
const predictQuery = (model: string, fields: string): string =>
  `query($i: PredictionInput!) { predict(model: "${model}", input: $i) { ${fields} } }`;
const base64Of = (values: Float32Array): string => Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64');

/** A predict answer with one of the model's labels and a score in [0, 1]. */
function labelled(labels: string[], extra?: (p: Record<string, unknown>, index: number) => string | undefined) {
  return (data: Record<string, unknown>, index: number): string | undefined => {
    const p = data.predict as Record<string, unknown> | null;
    if (!p) return 'predict is null';
    if (!labels.includes(p.label as string)) return `label ${JSON.stringify(p.label)} is none of ${labels.join(', ')}`;
    if (typeof p.score !== 'number' || p.score < 0 || p.score > 1) return `score ${JSON.stringify(p.score)}`;
    return extra?.(p, index);
  };
}

export function scenarios(): Scenario[] {
  // spam-mlp's inputs: the features of real held-out mail, as a client would compute them.
  const mail = loadSpamSplit().holdout.slice(0, INPUTS);
  const spamRows = mail.map((m) => spamFeatures(m.text));
  const spamQuery = predictQuery('spam-mlp', 'label score');
  const spamJson = spamRows.map((row) => body(spamQuery, { i: { features: Array.from(row, (v) => Number(v.toPrecision(7))) } }));
  const spamBase64 = spamRows.map((row) =>
    body(spamQuery, { i: { tensors: [{ name: 'features', shape: [1, row.length], datatype: 'FP32', base64: base64Of(row) }] } }),
  );
  const spamCheck = labelled(['ham', 'spam']);
  // mlp-bench's weights are random, so are its inputs (seeded).
  const uniform = mulberry32(20240520);
  const mlpQuery = predictQuery('mlp-bench', 'label score');
  const mlpRows = Array.from({ length: INPUTS }, () => Float32Array.from({ length: 512 }, () => uniform() * 2 - 1));
  const mlpBodies = mlpRows.map((row) =>
    body(mlpQuery, { i: { tensors: [{ name: 'input', shape: [1, 512], datatype: 'FP32', base64: base64Of(row) }] } }),
  );
  const spam = (encoding: 'JSON features' | 'base64 tensor', connections: number): HttpScenario => ({
    kind: 'http',
    id: `spam-${encoding === 'JSON features' ? 'json' : 'b64'}-${connections}`,
    title: `spam-mlp predict, ${encoding}`,
    connections,
    bodies: encoding === 'JSON features' ? spamJson : spamBase64,
    model: 'spam-mlp',
    check: spamCheck,
  });
  return [
    { kind: 'ceiling', id: 'ceiling', title: 'mlp-bench ceiling: onnxruntime-node in-process, 2 threads' },
    {
      kind: 'http',
      id: 'floor',
      title: 'floor: { __typename }',
      connections: 64,
      bodies: [body('{ __typename }')],
      check: (data) => (data.__typename === 'Query' ? undefined : `__typename ${JSON.stringify(data.__typename)}`),
    },
    {
      kind: 'http',
      id: 'cache-hit',
      title: 'cache hit: name-gender predict, one name',
      connections: 64,
      bodies: [body(predictQuery('name-gender', 'label score cached'), { i: { text: 'Maria' } })],
      model: 'name-gender',
      // The first sample may compute the answer; every later one must come from the cache.
      check: labelled(['female', 'male'], (p, index) =>
        index > 0 && p.cached !== true ? 'a repeated input was not answered from the cache' : undefined,
      ),
    },
    spam('JSON features', 16),
    spam('JSON features', 64),
    spam('base64 tensor', 16),
    spam('base64 tensor', 64),
    {
      kind: 'http',
      id: 'mlp-bench-64',
      title: 'mlp-bench predict, 1 row, base64 tensor',
      connections: 64,
      bodies: mlpBodies,
      model: 'mlp-bench',
      check: labelled(Array.from({ length: 10 }, (_, i) => `class-${i}`)),
    },
    restBinary('rest-bin-mlp-64', 'mlp-bench infer, REST binary tensor data, 1 row', 'mlp-bench', 'input', mlpRows, 10),
    {
      kind: 'grpc',
      id: 'grpc-mlp-64',
      title: 'mlp-bench ModelInfer, gRPC raw_input_contents, 1 row (h2load)',
      connections: 64,
      model: 'mlp-bench',
      request: grpcInfer('mlp-bench', 'input', mlpRows[0]),
      outputWidth: 10,
    },
    restBinary('rest-bin-spam-64', 'spam-mlp infer, REST binary tensor data', 'spam-mlp', 'features', spamRows, 2),
    {
      kind: 'grpc',
      id: 'grpc-spam-64',
      title: 'spam-mlp ModelInfer, gRPC raw_input_contents (h2load)',
      connections: 64,
      model: 'spam-mlp',
      request: grpcInfer('spam-mlp', 'features', spamRows[0]),
      outputWidth: 2,
    },
    {
      kind: 'ws',
      id: 'ws-submit-64',
      title: 'spam-mlp submit + subscribe over WebSocket (bench/load-client.ts), random JSON features',
      connections: 64,
      model: 'spam-mlp',
      rowWidth: 64,
    },
  ];
}
