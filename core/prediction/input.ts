/**
 * Turns a request's input (text, one row of features, several rows, or Open Inference
 * Protocol tensors) into one normalised form, checked against the model's declared
 * tensors. Every rejection names the field and what was expected.
 */
import { badInput } from '../errors/registry.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { Datatype, ModelConfig } from '../models/config.ts';
import { base64ByteLength, decodeBase64Tensor, decodeBytesTensor, encodeBase64Tensor } from '../tensor/codec.ts';
import { CHAR_NGRAM_DEFAULTS } from '../preprocess/char-ngrams.ts';

/** An input tensor: a plain array from a request, a typed array once off the wire. */
export type TensorData = Tensor;

/** A tensor in a job: FP32 values travel as base64 of their little-endian bytes (4 bytes a value, not ~19 characters of JSON). */
export type WireTensor = Omit<TensorData, 'data'> & { data?: number[]; f32?: string };
export type WireInput = { kind: 'text'; texts: string[] } | { kind: 'tensors'; tensors: WireTensor[] };

export function toWire(input: NormalizedInput): WireInput {
  if (input.kind === 'text') return input;
  return {
    kind: 'tensors',
    tensors: input.tensors.map(({ data, ...t }) =>
      t.datatype === 'FP32' ? { ...t, f32: encodeBase64Tensor('FP32', data)! } : { ...t, data: Array.from(data) },
    ),
  };
}

export function fromWire(input: WireInput): NormalizedInput {
  if (input.kind === 'text') return input;
  return {
    kind: 'tensors',
    tensors: input.tensors.map(({ f32, data, ...t }) => {
      if (f32 === undefined) return { ...t, data: data ?? [] };
      // Decoded straight into an aligned buffer of its own (not a slice of Buffer's shared pool, copied out).
      const length = base64ByteLength(f32);
      const buffer = new ArrayBuffer(length);
      if (length % 4 === 0 && Buffer.from(buffer).write(f32, 'base64') === length) return { ...t, data: new Float32Array(buffer) };
      const bytes = Buffer.from(f32, 'base64');
      return { ...t, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) };
    }),
  };
}

export type NormalizedInput = { kind: 'text'; texts: string[] } | { kind: 'tensors'; tensors: TensorData[] };

/** The request's input as the API receives it; exactly one form is set. */
export interface PredictionInput {
  text?: string | null;
  texts?: string[] | null;
  features?: number[] | null;
  instances?: number[][] | null;
  tensors?:
    | {
        name: string;
        shape: number[];
        datatype: string;
        data?: ArrayLike<number> | null;
        base64?: string | null;
        /** Raw little-endian values (the Open Inference Protocol's binary tensor data, gRPC's raw contents). */
        bytes?: Uint8Array | null;
      }[]
    | null;
}

const INTEGER_TYPES: ReadonlySet<Datatype> = new Set(['INT32', 'INT64', 'UINT8', 'INT8']);

/** Largest finite FP32 value: anything beyond becomes Infinity when the tensor is built. */
const FP32_MAX = 3.4028234663852886e38;

/**
 * The values each datatype holds. A value outside them would be silently changed on its way
 * into the tensor (1e39 becomes Infinity in FP32, 300 wraps to 44 in UINT8), and the model
 * would answer a question nobody asked; INT64 stops at 2^53, where doubles stop being exact.
 */
const RANGE: Record<Datatype, readonly [number, number]> = {
  FP32: [-FP32_MAX, FP32_MAX],
  FP64: [-Number.MAX_VALUE, Number.MAX_VALUE],
  INT32: [-(2 ** 31), 2 ** 31 - 1],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  UINT8: [0, 255],
  INT8: [-128, 127],
  BOOL: [0, 1],
};

function checkValues(field: string, data: ArrayLike<number>, datatype: Datatype): void {
  const [lo, hi] = RANGE[datatype];
  const integral = INTEGER_TYPES.has(datatype);
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw badInput(`${field}[${i}]`, `expected a finite number, got ${String(v)}`);
    if (integral && !Number.isInteger(v)) throw badInput(`${field}[${i}]`, `expected an integer for ${datatype}, got ${v}`);
    if (datatype === 'BOOL' && v !== 0 && v !== 1) throw badInput(`${field}[${i}]`, `expected 0 or 1 for BOOL, got ${v}`);
    if (v < lo || v > hi) throw badInput(`${field}[${i}]`, `${v} is outside the range of ${datatype} (${lo} to ${hi})`);
  }
}

function rowWidth(shape: number[]): number {
  return shape.slice(1).reduce((a, b) => a * b, 1);
}

/** Validates and normalises `input` for `config`. Returns the form the worker runs, and its row count. */
export function normalizeInput(input: PredictionInput, config: ModelConfig, maxRows: number): { input: NormalizedInput; rows: number } {
  const given = (['text', 'texts', 'features', 'instances', 'tensors'] as const).filter((k) => input[k] != null);
  if (given.length !== 1) {
    throw badInput(
      'input',
      given.length === 0 ? 'give one of text, texts, features, instances or tensors' : `give only one of ${given.join(', ')}`,
    );
  }
  const limit = Math.min(maxRows, config.maxRowsPerRequest);
  const tooMany = (field: string, got: number) =>
    badInput(
      field,
      `at most ${limit} rows per request, got ${got} (the model's maxRowsPerRequest is ${config.maxRowsPerRequest}, the server's predict.maxRows is ${maxRows})`,
    );
  const form = given[0];

  if (form === 'text' || form === 'texts') {
    const texts = form === 'text' ? [input.text as string] : (input.texts as string[]);
    if (!config.preprocessing) throw badInput(`input.${form}`, `model '${config.name}' takes no text; send features, instances or tensors`);
    if (texts.length === 0) throw badInput('input.texts', 'expected at least one text');
    if (texts.length > limit) throw tooMany('input.texts', texts.length);
    const maxLength = config.preprocessing.maxLength ?? CHAR_NGRAM_DEFAULTS.maxLength;
    texts.forEach((t, i) => {
      const at = form === 'text' ? 'input.text' : `input.texts[${i}]`;
      if (typeof t !== 'string' || t.trim().length === 0) throw badInput(at, 'expected a non-empty string');
      if (t.length > maxLength) throw badInput(at, `at most ${maxLength} characters, got ${t.length}`);
    });
    return { input: { kind: 'text', texts }, rows: texts.length };
  }

  if (form === 'features' || form === 'instances') {
    if (config.inputs.length !== 1)
      throw badInput(`input.${form}`, `model '${config.name}' has ${config.inputs.length} inputs; send tensors`);
    const spec = config.inputs[0];
    const rows = form === 'features' ? [input.features as number[]] : (input.instances as number[][]);
    if (rows.length === 0) throw badInput('input.instances', 'expected at least one row');
    if (rows.length > limit) throw tooMany(`input.${form}`, rows.length);
    const width = rowWidth(spec.shape);
    if (spec.shape.slice(1).some((d) => d === -1))
      throw badInput(`input.${form}`, `input '${spec.name}' has dynamic inner dimensions; send tensors with a shape`);
    const data: number[] = [];
    rows.forEach((row, r) => {
      const at = form === 'features' ? 'input.features' : `input.instances[${r}]`;
      if (row.length !== width)
        throw badInput(at, `expected ${width} values for input '${spec.name}' of shape ${JSON.stringify(spec.shape)}, got ${row.length}`);
      checkValues(at, row, spec.datatype);
      for (const v of row) data.push(v);
    });
    return {
      input: {
        kind: 'tensors',
        tensors: [{ name: spec.name, datatype: spec.datatype, shape: [rows.length, ...spec.shape.slice(1)], data }],
      },
      rows: rows.length,
    };
  }

  const tensors = input.tensors as NonNullable<PredictionInput['tensors']>;
  const seen = new Set<string>();
  let batch = -1;
  const out: TensorData[] = tensors.map((t, i) => {
    const at = `input.tensors[${i}]`;
    const spec = config.inputs.find((s) => s.name === t.name);
    if (!spec)
      throw badInput(
        `${at}.name`,
        `model '${config.name}' has no input '${t.name}'; inputs are ${config.inputs.map((s) => s.name).join(', ')}`,
      );
    if (seen.has(t.name)) throw badInput(`${at}.name`, `input '${t.name}' given twice`);
    seen.add(t.name);
    if (t.datatype !== spec.datatype)
      throw badInput(`${at}.datatype`, `expected ${spec.datatype} for input '${spec.name}', got ${t.datatype}`);
    if (t.shape.length !== spec.shape.length)
      throw badInput(
        `${at}.shape`,
        `expected rank ${spec.shape.length} like ${JSON.stringify(spec.shape)}, got ${JSON.stringify(t.shape)}`,
      );
    t.shape.forEach((d, k) => {
      if (!Number.isInteger(d) || d <= 0) throw badInput(`${at}.shape[${k}]`, `expected a positive integer, got ${d}`);
      if (spec.shape[k] !== -1 && spec.shape[k] !== d)
        throw badInput(`${at}.shape[${k}]`, `expected ${spec.shape[k]} as in ${JSON.stringify(spec.shape)}, got ${d}`);
    });
    if (batch !== -1 && t.shape[0] !== batch)
      throw badInput(`${at}.shape[0]`, `all inputs must have the same batch size ${batch}, got ${t.shape[0]}`);
    batch = t.shape[0];
    const size = t.shape.reduce((a, b) => a * b, 1);
    const forms = (t.data != null ? 1 : 0) + (t.base64 != null ? 1 : 0) + (t.bytes != null ? 1 : 0);
    if (forms !== 1)
      throw badInput(at, t.bytes === undefined ? 'give exactly one of data or base64' : 'give exactly one of data, base64 or bytes');
    const field = t.data != null ? `${at}.data` : t.base64 != null ? `${at}.base64` : `${at}.bytes`;
    const data =
      t.data != null
        ? t.data
        : t.base64 != null
          ? decodeBase64Tensor(field, t.base64, spec.datatype, size)
          : decodeBytesTensor(field, t.bytes!, spec.datatype, size);
    if (data.length !== size) throw badInput(field, `shape ${JSON.stringify(t.shape)} needs ${size} values, got ${data.length}`);
    checkValues(field, data, spec.datatype);
    return { name: spec.name, datatype: spec.datatype, shape: [...t.shape], data };
  });
  const missing = config.inputs.filter((s) => !seen.has(s.name)).map((s) => s.name);
  if (missing.length) throw badInput('input.tensors', `missing input(s) ${missing.join(', ')}`);
  if (batch > limit) throw tooMany('input.tensors', batch);
  return { input: { kind: 'tensors', tensors: out }, rows: batch };
}
