/**
 * From a run's output tensors to predictions: one per input row, with label, score and
 * per-class probabilities for classification models, and the raw tensors for every model.
 */
import type { ModelConfig } from '../models/config.ts';
import type { RowPrediction } from '../prediction/record.ts';
import type { OutputTensor } from './types.ts';
import type { TensorValue } from '../tensor/tensor.ts';

function softmax(values: number[]): number[] {
  const max = Math.max(...values);
  const exps = values.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

/** Takes rows [start, start + count) of each output. */
export function sliceRows(outputs: OutputTensor[], start: number, count: number): TensorValue[] {
  return outputs.map((o) => {
    const width = o.shape.slice(1).reduce((a, b) => a * b, 1);
    // One array, filled in place (not a generic slice of the typed array and then a mapped copy of it).
    const from = start * width;
    const data = new Array<number>(count * width);
    const src = o.data as ArrayLike<number | bigint>;
    for (let i = 0; i < data.length; i++) data[i] = Number(src[from + i]);
    return { name: o.name, datatype: String(o.datatype), shape: [count, ...o.shape.slice(1)], data };
  });
}

/**
 * The first NaN or infinite value of any output, if one is there. JSON has no such numbers
 * (they would travel as null and come back as 0), and a label taken from them means nothing.
 */
export function nonFiniteOutput(
  outputs: TensorValue[],
  start = 0,
  count = outputs[0]?.shape[0] ?? 0,
): { name: string; index: number; value: number } | undefined {
  for (const o of outputs) {
    const width = o.shape.slice(1).reduce((a, b) => a * b, 1);
    const d = o.data;
    for (let i = start * width; i < (start + count) * width; i++)
      if (!Number.isFinite(d[i])) return { name: o.name, index: i - start * width, value: d[i] };
  }
  return undefined;
}

export function rowPredictions(config: ModelConfig, outputs: TensorValue[]): RowPrediction[] {
  const rows = outputs[0]?.shape[0] ?? 0;
  if (config.task !== 'classification' || !config.labels) {
    return Array.from({ length: rows }, () => ({ label: null, score: null, probabilities: null }));
  }
  const scores = outputs.find((o) => o.name === config.scoresOutput) ?? outputs[0];
  const width = scores.shape.slice(1).reduce((a, b) => a * b, 1);
  const labels = config.labels;
  const result: RowPrediction[] = [];
  for (let r = 0; r < rows; r++) {
    let p = scores.data.slice(r * width, (r + 1) * width);
    if (config.scoresKind === 'logits') p = softmax(p);
    let best = 0;
    for (let i = 1; i < p.length; i++) if (p[i] > p[best]) best = i;
    result.push({
      label: labels[best] ?? String(best),
      score: p[best],
      probabilities: p.map((probability, i) => ({ label: labels[i] ?? String(i), probability })),
    });
  }
  return result;
}
