/**
 * How two versions' answers to the same input compare: whether each row's label agrees
 * (classification models), and, over every output value, the largest absolute and relative
 * difference (any model). Only answers that both succeeded are compared.
 */
import type { Datatype } from '../models/config.ts';
import type { PredictionResult } from '../prediction/record.ts';
import { decodeBase64Tensor } from '../tensor/codec.ts';

export interface OutputComparison {
  /** Rows whose labels both versions gave. */
  rows: number;
  agreedRows: number;
  /** Output values compared (outputs of the same name, datatype and shape in both answers). */
  values: number;
  /** Largest |a - b| over those values; 0 when none were compared. */
  maxAbs: number;
  /** Largest |a - b| / max(|a|, |b|) over those values (0 where both are 0). */
  maxRel: number;
  /** Outputs present in one answer only, or with a different datatype or shape. */
  mismatchedOutputs: number;
}

function values(t: PredictionResult['outputs'][number]): ArrayLike<number> {
  const size = t.shape.reduce((a, b) => a * b, 1);
  return decodeBase64Tensor(`outputs.${t.name}`, t.base64, t.datatype as Datatype, size);
}

/** Compares `b` (the candidate) with `a` (the stable) for one request. */
export function compareResults(a: Pick<PredictionResult, 'predictions' | 'outputs'>, b: Pick<PredictionResult, 'predictions' | 'outputs'>) {
  const out: OutputComparison = { rows: 0, agreedRows: 0, values: 0, maxAbs: 0, maxRel: 0, mismatchedOutputs: 0 };
  const rows = Math.min(a.predictions.length, b.predictions.length);
  for (let i = 0; i < rows; i++) {
    const la = a.predictions[i].label;
    const lb = b.predictions[i].label;
    if (la == null || lb == null) continue;
    out.rows++;
    if (la === lb) out.agreedRows++;
  }
  const names = new Set([...a.outputs.map((o) => o.name), ...b.outputs.map((o) => o.name)]);
  for (const name of names) {
    const ta = a.outputs.find((o) => o.name === name);
    const tb = b.outputs.find((o) => o.name === name);
    if (!ta || !tb || ta.datatype !== tb.datatype || ta.shape.join() !== tb.shape.join()) {
      out.mismatchedOutputs++;
      continue;
    }
    const va = values(ta);
    const vb = values(tb);
    for (let i = 0; i < va.length; i++) {
      const d = Math.abs(va[i] - vb[i]);
      const scale = Math.max(Math.abs(va[i]), Math.abs(vb[i]));
      if (d > out.maxAbs) out.maxAbs = d;
      if (scale > 0 && d / scale > out.maxRel) out.maxRel = d / scale;
    }
    out.values += va.length;
  }
  return out;
}
