/** Joining several requests' inputs into one batch, and the signature that says which may join. */
import type { NormalizedInput, TensorData } from '../prediction/input.ts';

/**
 * Requests with the same signature can share an inference: the same kind of input and, for
 * tensors, the same names, datatypes and per-row shapes.
 */
export function shapeSignature(input: NormalizedInput): string {
  if (input.kind === 'text') return 'text';
  return input.tensors
    .map((t) => `${t.name}:${t.datatype}:${t.shape.slice(1).join('x')}`)
    .sort()
    .join('|');
}

/** Concatenates inputs of one signature along the batch dimension. */
export function mergeInputs(inputs: NormalizedInput[]): NormalizedInput {
  if (inputs.length === 1) return inputs[0];
  const first = inputs[0];
  if (first.kind === 'text') {
    return { kind: 'text', texts: inputs.flatMap((i) => (i.kind === 'text' ? i.texts : [])) };
  }
  const tensors: TensorData[] = first.tensors.map((t) => {
    const parts = inputs.map((i) => (i as Extract<NormalizedInput, { kind: 'tensors' }>).tensors.find((x) => x.name === t.name)!);
    const rows = parts.reduce((s, p) => s + p.shape[0], 0);
    const size = parts.reduce((s, p) => s + p.data.length, 0);
    const data = t.datatype === 'FP32' ? new Float32Array(size) : new Float64Array(size);
    let offset = 0;
    for (const p of parts) {
      data.set(p.data, offset);
      offset += p.data.length;
    }
    return { name: t.name, datatype: t.datatype, shape: [rows, ...t.shape.slice(1)], data };
  });
  return { kind: 'tensors', tensors };
}

/**
 * The rows `[start, start + rows)` of each range, in order, as one input: a coalesced job's
 * parts still to run, when others of it were answered already (core/worker/processor.ts).
 */
export function selectRows(input: NormalizedInput, ranges: readonly { start: number; rows: number }[]): NormalizedInput {
  if (input.kind === 'text') return { kind: 'text', texts: ranges.flatMap((r) => input.texts.slice(r.start, r.start + r.rows)) };
  const total = ranges.reduce((s, r) => s + r.rows, 0);
  const tensors: TensorData[] = input.tensors.map((t) => {
    const width = t.shape.slice(1).reduce((a, b) => a * b, 1);
    const data = t.datatype === 'FP32' ? new Float32Array(total * width) : new Float64Array(total * width);
    let offset = 0;
    for (const r of ranges) {
      const from = Array.prototype.slice.call(t.data, r.start * width, (r.start + r.rows) * width) as number[];
      data.set(from, offset);
      offset += from.length;
    }
    return { ...t, shape: [total, ...t.shape.slice(1)], data };
  });
  return { kind: 'tensors', tensors };
}
