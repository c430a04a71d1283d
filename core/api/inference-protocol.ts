/**
 * The Open Inference Protocol (KServe's "v2" protocol), without its transports: server and
 * model metadata, readiness, and `infer` mapped onto the same core as GraphQL's `predict`
 * (the catalog's routing, the input checks, the cache, the edge batcher, deadlines, metrics).
 * server/oip/rest.ts puts it on HTTP (JSON, and the binary tensor data extension) and
 * server/oip/grpc.ts on gRPC (`inference.GRPCInferenceService`). Binary tensors stay bytes
 * here: raw little-endian input goes to the core as bytes, outputs come back as the bytes the
 * worker sent; only a client that asks for JSON `data` gets numbers.
 */
import { ServingError, badInput } from '../errors/registry.ts';
import { authorize, type Principal } from './authorization.ts';
import type { ModelCatalog } from './catalog.ts';
import type { PredictOperation, Predictor } from './predictor.ts';
import type { PredictionInput } from '../prediction/input.ts';
import type { Datatype, ModelConfig } from '../models/config.ts';
import { BYTES, decodeBytesTensor } from '../tensor/codec.ts';

/** Every datatype the protocol names; the ones a model here can declare are the keys of BYTES. */
export const OIP_DATATYPES = [
  'BOOL',
  'UINT8',
  'UINT16',
  'UINT32',
  'UINT64',
  'INT8',
  'INT16',
  'INT32',
  'INT64',
  'FP16',
  'FP32',
  'FP64',
  'BYTES',
];

/** The extensions this server speaks (`GET /v2`, ServerMetadata). */
export const OIP_EXTENSIONS = ['binary_tensor_data'];

/** The platform every model reports: they all run on onnxruntime. */
export const OIP_PLATFORM = 'onnxruntime_onnx';

export interface TensorMetadata {
  name: string;
  datatype: string;
  shape: number[];
}

export interface ModelMetadata {
  name: string;
  versions: string[];
  platform: string;
  inputs: TensorMetadata[];
  outputs: TensorMetadata[];
}

/** An input tensor of an infer request: JSON `data` (flat or nested, row-major), or raw little-endian `bytes`. */
export interface InferInput {
  name: string;
  datatype: string;
  shape: number[];
  data?: unknown;
  bytes?: Uint8Array;
}

export interface InferRequest {
  id?: string;
  inputs: InferInput[];
  /** The outputs wanted, in this order (all of the model's when absent); `binary` asks for bytes over REST. */
  outputs?: { name: string; binary?: boolean }[];
  /** Request parameters: `timeout_ms` (our deadline in ms); the rest are accepted and ignored. */
  parameters?: Record<string, unknown>;
}

/** An output tensor as the worker sent it: little-endian bytes, and the size of its shape. */
export interface InferOutput {
  name: string;
  datatype: string;
  shape: number[];
  bytes: Buffer;
  /** Asked for as binary data (REST). */
  binary: boolean;
}

export interface InferResponse {
  model_name: string;
  model_version: string;
  id?: string;
  outputs: InferOutput[];
}

export interface InferContext {
  model: string;
  version?: string | null;
  principal: Principal | undefined;
  requestId: string;
  operation: PredictOperation;
  /** The client's own deadline (gRPC's), in ms; the request's `timeout_ms` parameter otherwise. */
  timeoutMs?: number;
  routeKey?: string | null;
  traceId?: string;
}

/** A tensor's element count, checking that each dimension is a non-negative integer. */
function elements(field: string, shape: unknown): number {
  if (!Array.isArray(shape)) throw badInput(field, 'expected an array of dimensions');
  let n = 1;
  shape.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0)
      throw badInput(`${field}[${i}]`, `expected a non-negative integer, got ${String(d)}`);
    n *= d;
  });
  return n;
}

/**
 * JSON `data`, flat or nested row-major, as a flat list of numbers (BOOL's true / false as 1 / 0).
 * Nesting is checked against the shape: each level holds as many items as its dimension.
 */
function flatten(field: string, data: unknown, shape: number[], size: number): number[] {
  if (!Array.isArray(data)) throw badInput(field, 'expected an array of values');
  const out: number[] = [];
  const scalar = (v: unknown, at: string): void => {
    if (typeof v === 'number') out.push(v);
    else if (typeof v === 'boolean') out.push(v ? 1 : 0);
    else throw badInput(at, `expected a number, got ${v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v}`);
  };
  const nested = (v: unknown[], depth: number, at: string): void => {
    if (v.length !== shape[depth])
      throw badInput(at, `expected ${shape[depth]} items at depth ${depth} of shape ${JSON.stringify(shape)}, got ${v.length}`);
    const last = depth === shape.length - 1;
    for (let i = 0; i < v.length; i++) {
      const item = v[i];
      if (last) scalar(item, `${at}[${i}]`);
      else if (Array.isArray(item)) nested(item, depth + 1, `${at}[${i}]`);
      else throw badInput(`${at}[${i}]`, `expected a list of ${shape[depth + 1]} items (shape ${JSON.stringify(shape)})`);
    }
  };
  if (data.length > 0 && Array.isArray(data[0]) && shape.length > 1) nested(data, 0, field);
  else for (let i = 0; i < data.length; i++) scalar(data[i], `${field}[${i}]`);
  if (out.length !== size) throw badInput(field, `shape ${JSON.stringify(shape)} needs ${size} values, got ${out.length}`);
  return out;
}

/** The input a text model (one with `preprocessing`) takes over the protocol: its texts, BYTES, one a row. */
export const TEXT_INPUT = 'text';

/**
 * BYTES elements as the protocol's binary form lays them out: each a 4-byte little-endian
 * length, then its bytes. Exactly `count` elements and nothing after them.
 */
export function decodeBytesElements(field: string, bytes: Uint8Array, count: number): string[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: string[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 4 > buf.length) throw badInput(field, `BYTES element ${i}: its 4-byte length runs past the ${buf.length} bytes given`);
    const n = buf.readUInt32LE(at);
    at += 4;
    if (at + n > buf.length) throw badInput(field, `BYTES element ${i}: ${n} bytes run past the ${buf.length} bytes given`);
    out.push(buf.toString('utf8', at, at + n));
    at += n;
  }
  if (at !== buf.length) throw badInput(field, `${buf.length - at} bytes follow the ${count} BYTES elements of the shape`);
  return out;
}

/** The texts of a text model's BYTES input (JSON strings, gRPC's bytes_contents, or binary length-prefixed elements). */
function textsOf(req: InferRequest, index: number, config: ModelConfig | undefined): string[] {
  const t = req.inputs[index];
  const at = `inputs[${index}]`;
  if (config && !config.preprocessing)
    throw badInput(
      `${at}.datatype`,
      `model '${config.name}' takes no text (BYTES); its inputs are ${config.inputs.map((s) => `${s.name} ${s.datatype}`).join(', ')}`,
    );
  if (req.inputs.length !== 1) throw badInput('inputs', `a text model takes one input, '${TEXT_INPUT}' (BYTES)`);
  if (t.name !== TEXT_INPUT) throw badInput(`${at}.name`, `a text model's input is '${TEXT_INPUT}', got '${t.name}'`);
  const size = elements(`${at}.shape`, t.shape);
  if (t.shape.length < 1 || t.shape.slice(1).some((d) => d !== 1))
    throw badInput(`${at}.shape`, `expected [rows] or [rows, 1] for one text a row, got ${JSON.stringify(t.shape)}`);
  if (t.bytes !== undefined) return decodeBytesElements(at, t.bytes, size);
  if (!Array.isArray(t.data)) throw badInput(`${at}.data`, 'expected a list of texts');
  const texts = (t.data as unknown[]).flat(t.shape.length).map((v, i) => {
    if (typeof v === 'string') return v;
    if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8');
    throw badInput(`${at}.data[${i}]`, `expected a text, got ${v === null ? 'null' : typeof v}`);
  });
  if (texts.length !== size) throw badInput(`${at}.data`, `shape ${JSON.stringify(t.shape)} needs ${size} texts, got ${texts.length}`);
  return texts;
}

export interface InferenceProtocolDeps {
  catalog: ModelCatalog;
  predictor: Predictor;
  /** The server's readiness (models loaded, Redis answering), as `/ready` says. */
  ready: () => Promise<boolean>;
  version: string;
}

export class InferenceProtocol {
  private readonly deps: InferenceProtocolDeps;

  constructor(deps: InferenceProtocolDeps) {
    this.deps = deps;
  }

  serverMetadata(): { name: string; version: string; extensions: string[] } {
    return { name: 'batchline', version: this.deps.version, extensions: OIP_EXTENSIONS };
  }

  serverReady(): Promise<boolean> {
    return this.deps.ready();
  }

  /** Metadata of a model version (the stable one when none is named): 404 for an unknown name or version. */
  modelMetadata(principal: Principal | undefined, model: string, version?: string | null): ModelMetadata {
    authorize({ principal }, { model });
    const repo = this.deps.catalog.repository;
    if (!repo.has(model)) throw new ServingError('MODEL_NOT_FOUND', `no model named '${model}'`);
    const mv = version ? repo.find(model, version) : this.deps.catalog.resolve(model);
    if (!mv) throw new ServingError('MODEL_VERSION_NOT_FOUND', `model '${model}' has no version '${version}'`);
    const tensor = (t: { name: string; datatype: string; shape: number[] }): TensorMetadata => ({
      name: t.name,
      datatype: t.datatype,
      shape: [...t.shape],
    });
    return {
      name: mv.name,
      versions: repo.versions.filter((v) => v.name === model).map((v) => v.version),
      platform: OIP_PLATFORM,
      // A text model's client sends text (its features are the server's business): one BYTES input.
      inputs: mv.config.preprocessing ? [{ name: TEXT_INPUT, datatype: 'BYTES', shape: [-1] }] : mv.config.inputs.map(tensor),
      outputs: mv.config.outputs.map(tensor),
    };
  }

  /** Whether the version loaded and a live worker serves it: 404 for an unknown name or version. */
  async modelReady(principal: Principal | undefined, model: string, version?: string | null): Promise<boolean> {
    authorize({ principal }, { model });
    const repo = this.deps.catalog.repository;
    if (!repo.has(model)) throw new ServingError('MODEL_NOT_FOUND', `no model named '${model}'`);
    let want = version;
    if (!want) {
      try {
        want = this.deps.catalog.resolve(model).version;
      } catch (e) {
        if (e instanceof ServingError && e.code === 'MODEL_NOT_READY') return false;
        throw e;
      }
    }
    if (!repo.find(model, want)) throw new ServingError('MODEL_VERSION_NOT_FOUND', `model '${model}' has no version '${want}'`);
    const info = (await this.deps.catalog.models()).find((m) => m.name === model && m.version === want);
    return info?.ready ?? false;
  }

  /** A version's config, or undefined when it does not resolve (the predictor says why). */
  private configOf(model: string, version?: string | null): ModelConfig | undefined {
    try {
      return this.deps.catalog.resolve(model, version).config;
    } catch {
      return undefined;
    }
  }

  /** The request's inputs as the core's: text for a text model's BYTES input; tensors with bytes kept as bytes, JSON data flattened. */
  private toInput(req: InferRequest, config: ModelConfig | undefined): PredictionInput {
    if (!Array.isArray(req.inputs) || req.inputs.length === 0) throw badInput('inputs', 'expected at least one input tensor');
    const text = req.inputs.findIndex((t) => t?.datatype === 'BYTES');
    if (text >= 0) return { texts: textsOf(req, text, config) };
    return {
      tensors: req.inputs.map((t, i) => {
        const at = `inputs[${i}]`;
        if (typeof t?.name !== 'string' || !t.name) throw badInput(`${at}.name`, 'expected a tensor name');
        if (typeof t.datatype !== 'string' || !OIP_DATATYPES.includes(t.datatype))
          throw badInput(`${at}.datatype`, `unknown datatype '${String(t.datatype)}'; the protocol's are ${OIP_DATATYPES.join(', ')}`);
        const size = elements(`${at}.shape`, t.shape);
        const supported = Object.hasOwn(BYTES, t.datatype);
        if (t.bytes !== undefined) {
          if (!supported) throw badInput(`${at}.datatype`, `datatype ${t.datatype} is not served here (${Object.keys(BYTES).join(', ')})`);
          // The byte count is checked against the shape before anything else looks at the values.
          const want = size * BYTES[t.datatype as Datatype];
          if (t.bytes.byteLength !== want)
            throw badInput(`${at}`, `shape ${JSON.stringify(t.shape)} of ${t.datatype} needs ${want} bytes, got ${t.bytes.byteLength}`);
          return { name: t.name, datatype: t.datatype, shape: t.shape, bytes: t.bytes };
        }
        if (t.data === undefined || t.data === null) throw badInput(`${at}.data`, 'expected data (or binary data)');
        return { name: t.name, datatype: t.datatype, shape: t.shape, data: flatten(`${at}.data`, t.data, t.shape, size) };
      }),
    };
  }

  /** Runs the request through the predictor, the way GraphQL's `predict` does; answers the outputs asked for, as bytes. */
  async infer(req: InferRequest, ctx: InferContext): Promise<InferResponse> {
    authorize({ principal: ctx.principal }, { model: ctx.model });
    // Inputs and the outputs asked for are checked before the model runs (against the version named, or the stable one).
    const config = this.configOf(ctx.model, ctx.version);
    const input = this.toInput(req, config);
    const asked = req.outputs;
    if (asked !== undefined && !Array.isArray(asked)) throw badInput('outputs', 'expected a list of requested outputs');
    const declared = config?.outputs.map((o) => o.name);
    asked?.forEach((w, i) => {
      if (typeof w?.name !== 'string') throw badInput(`outputs[${i}].name`, 'expected an output name');
      if (declared && !declared.includes(w.name))
        throw badInput(`outputs[${i}].name`, `model '${ctx.model}' has no output '${w.name}'; outputs are ${declared.join(', ')}`);
    });
    const timeout = req.parameters?.timeout_ms;
    if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout <= 0))
      throw badInput('parameters.timeout_ms', `expected a positive integer, got ${JSON.stringify(timeout)}`);
    const result = await this.deps.predictor.predict({
      model: ctx.model,
      version: ctx.version,
      input,
      requestId: ctx.requestId,
      timeoutMs: ctx.timeoutMs ?? (timeout as number | undefined),
      routeKey: ctx.routeKey,
      traceId: ctx.traceId,
      operation: ctx.operation,
    });
    const byName = new Map(result.outputs.map((o) => [o.name, o]));
    const wanted = asked ?? result.outputs.map((o) => ({ name: o.name, binary: false }));
    const outputs = wanted.map((w, i) => {
      const o = byName.get(w?.name);
      if (!o)
        throw badInput(
          `outputs[${i}].name`,
          `model '${result.model}' has no output '${String(w?.name)}'; outputs are ${result.outputs.map((x) => x.name).join(', ')}`,
        );
      // Predictor.predict answers only outputs checkOutputs passed (datatype, shape, byte count: 502 otherwise).
      return { name: o.name, datatype: o.datatype, shape: o.shape, bytes: Buffer.from(o.base64, 'base64'), binary: w.binary === true };
    });
    return { model_name: result.model, model_version: result.version, ...(req.id !== undefined ? { id: req.id } : {}), outputs };
  }
}

/** An output's values as numbers, for a JSON answer or gRPC's typed contents. */
export function outputValues(o: InferOutput): ArrayLike<number> {
  const size = o.shape.reduce((a, b) => a * b, 1);
  return decodeBytesTensor(o.name, o.bytes, o.datatype as Datatype, size);
}
