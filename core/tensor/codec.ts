/**
 * Tensors as bytes: little-endian, row-major values, carried as base64 in JSON (a request's
 * `base64` tensor, a job's FP32 input, a result's outputs). One byte layout per datatype.
 */
import { ServingError, badInput } from '../errors/registry.ts';
import type { Datatype } from '../models/config.ts';
import type { Tensor, TensorValue } from './tensor.ts';

/** An output tensor as it travels and is stored: values as base64 of their little-endian bytes. */
export type EncodedTensor = Omit<Tensor<never, string>, 'data'> & { base64: string };

/** Bytes per value of each datatype in a `base64` tensor (little-endian, row-major). */
export const BYTES: Record<Datatype, number> = { FP32: 4, FP64: 8, INT32: 4, INT64: 8, BOOL: 1, UINT8: 1, INT8: 1 };

/** Bytes that a base64 text decodes to, without decoding it (standard padding). */
export function base64ByteLength(text: string): number {
  const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  return (text.length / 4) * 3 - pad;
}

/** The inverse of decodeBase64Tensor, for outputs; null for a datatype with no byte layout here. */
export function encodeBase64Tensor(datatype: string, data: ArrayLike<number>): string | null {
  let view: ArrayBufferView;
  switch (datatype) {
    case 'FP32':
      view = data instanceof Float32Array ? data : Float32Array.from(data);
      break;
    case 'FP64':
      view = Float64Array.from(data);
      break;
    case 'INT32':
      view = Int32Array.from(data);
      break;
    case 'INT8':
      view = Int8Array.from(data);
      break;
    case 'UINT8':
    case 'BOOL':
      view = Uint8Array.from(data);
      break;
    case 'INT64':
      view = BigInt64Array.from(Array.from(data, (v) => BigInt(Math.trunc(v))));
      break;
    default:
      return null;
  }
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString('base64');
}

/**
 * The values of a tensor sent as base64 of their little-endian bytes (the Open Inference
 * Protocol's binary extension, carried in a JSON string). INT64 values must fit in a double
 * exactly, as every other path keeps them.
 */
export function decodeBase64Tensor(field: string, text: string, datatype: Datatype, size: number): ArrayLike<number> {
  const bytes = Buffer.from(text, 'base64');
  // Buffer.from skips what is not base64; strict means the bytes encode back to the same text (a regex cost 5x more).
  if (bytes.toString('base64') !== text) throw badInput(field, 'expected standard base64 (A-Z, a-z, 0-9, +, /, = padding)');
  return decodeBytesTensor(field, bytes, datatype, size);
}

/**
 * The values of a tensor sent as raw little-endian bytes (the Open Inference Protocol's binary
 * tensor data, gRPC's `raw_input_contents`): one copy into an aligned buffer, then a typed view.
 * INT64 values must fit in a double exactly, as every other path keeps them.
 */
export function decodeBytesTensor(field: string, bytes: Uint8Array, datatype: Datatype, size: number): ArrayLike<number> {
  const want = size * BYTES[datatype];
  if (bytes.byteLength !== want) throw badInput(field, `${size} ${datatype} values need ${want} bytes, got ${bytes.byteLength}`);
  // Copy into an aligned buffer of its own: the Buffer may be a slice of a shared pool.
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  switch (datatype) {
    case 'FP32':
      return new Float32Array(buf);
    case 'FP64':
      return new Float64Array(buf);
    case 'INT32':
      return new Int32Array(buf);
    case 'INT8':
      return new Int8Array(buf);
    case 'UINT8':
    case 'BOOL':
      return new Uint8Array(buf);
    case 'INT64': {
      const wide = new BigInt64Array(buf);
      const out = new Float64Array(size);
      for (let i = 0; i < size; i++) {
        const v = Number(wide[i]);
        if (!Number.isSafeInteger(v)) throw badInput(`${field}[${i}]`, `INT64 value ${wide[i]} is beyond 2^53`);
        out[i] = v;
      }
      return out;
    }
  }
}

/** Rows [start, start + count) of each output, as bytes. */
export function encodeRows(outputs: TensorValue[], start: number, count: number): EncodedTensor[] {
  return outputs.map((o) => {
    const width = o.shape.slice(1).reduce((a, b) => a * b, 1);
    const from = start * width;
    let part: ArrayLike<number>;
    if (o.datatype === 'FP32') {
      // Straight into the bytes that are encoded (not a slice of the values, then a Float32Array of the slice).
      const f = new Float32Array(count * width);
      for (let i = 0; i < f.length; i++) f[i] = o.data[from + i];
      part = f;
    } else part = o.data.slice(from, from + count * width);
    const base64 = encodeBase64Tensor(o.datatype, part);
    // The repository admits only outputs of the datatypes below; anything else is a bug here.
    if (base64 === null) throw new Error(`output '${o.name}' has datatype ${o.datatype}, which has no byte layout`);
    return { name: o.name, datatype: o.datatype, shape: [count, ...o.shape.slice(1)], base64 };
  });
}

/**
 * The bytes of an encoded output, checked against its shape: a size that disagrees is a
 * worker's answer the API cannot use (502 BAD_GATEWAY naming the model), never a wrong 200.
 */
export function outputBytes(t: EncodedTensor, model: string): Buffer {
  const per = (BYTES as Record<string, number | undefined>)[t.datatype];
  const size = t.shape.reduce((a, b) => a * b, 1);
  if (per === undefined)
    throw new ServingError(
      'BAD_GATEWAY',
      `model '${model}' answered output '${t.name}' with datatype ${t.datatype}, which has no byte layout`,
    );
  if (base64ByteLength(t.base64) !== size * per)
    throw new ServingError(
      'BAD_GATEWAY',
      `model '${model}' answered output '${t.name}' of shape ${JSON.stringify(t.shape)} with ${base64ByteLength(t.base64)} bytes, not the ${size * per} its shape needs`,
    );
  return Buffer.from(t.base64, 'base64');
}

/** The values of an encoded output, for clients that ask for `data` (a size that disagrees with the shape is 502). */
export function decodeOutput(t: EncodedTensor, model = 'the model'): number[] {
  const bytes = outputBytes(t, model);
  const size = t.shape.reduce((a, b) => a * b, 1);
  return Array.from(decodeBytesTensor('outputs', bytes, t.datatype as Datatype, size));
}
