/**
 * How far a GPU provider's outputs may be from the CPU provider's for the same inputs, per
 * demo model, and the comparison the GPU check makes.
 *
 * Both run float32, but not the same float32 arithmetic: a GPU matrix product sums each dot
 * product in another order (tiles, then a reduction across them) and may fuse multiply and
 * add, so each sum of K products can land a few units in the last place (u = 2^-24, about
 * 6e-8) from the CPU's, growing like sqrt(K) u times the sum's scale, and layer after layer.
 * Neither side is exact; the tolerance says how much disagreement is still float rounding.
 * An element passes when |gpu - cpu| <= atol + rtol * |cpu| (numpy's allclose), and a row's
 * label must agree wherever the CPU's top two scores are further apart than that allowance.
 */

export interface Tolerance {
  atol: number;
  rtol: number;
  why: string;
}

export const TOLERANCES: Record<string, Tolerance> = {
  'mlp-bench': {
    atol: 1e-4,
    rtol: 1e-4,
    why:
      'logits of 512-2048-2048-10 dense layers: sums of up to 2048 products, three layers deep; rounding puts each about ' +
      'sqrt(2048) x 6e-8 = 3e-6 of its scale from the other side (measured: 3.0e-6 at most on Mesa lavapipe, logits up to 1.9), ' +
      'so 1e-4 leaves some 30x for other GPUs summation orders and fused multiply-adds, and is still 10^4 below the logits themselves',
  },
  'spam-mlp': {
    atol: 1e-5,
    rtol: 1e-4,
    why:
      'probabilities (softmax) of a 64-input MLP: short sums, outputs in [0, 1]; rounding differences measured at 3.6e-7 ' +
      '(Mesa lavapipe), so 1e-5 allows about 30x that and still decides every class the same way',
  },
  'name-gender': {
    atol: 1e-5,
    rtol: 1e-4,
    why:
      'probabilities of a 1024-input MLP over character n-gram counts (sparse inputs, outputs in [0, 1]); measured 3.6e-7 ' +
      '(Mesa lavapipe), 1e-5 allows about 30x that',
  },
};

/** For a model without its own entry: the loosest of the above. */
export const DEFAULT_TOLERANCE: Tolerance = { ...TOLERANCES['mlp-bench'], why: 'no tolerance of its own: the loosest of the demo models' };

export interface Comparison {
  elements: number;
  rows: number;
  maxAbsDiff: number;
  /** The largest |diff| / (atol + rtol |cpu|): at most 1 passes. */
  worstRatio: number;
  /** Rows whose label differs while the CPU's top-two margin exceeds the allowance (must be 0). */
  labelFlips: number;
  /** Rows whose top two are within the allowance: either label is float rounding's call. */
  ties: number;
  pass: boolean;
}

/** Compares `got` with `ref` (row-major, `width` values a row) under `tol`. */
export function compareOutputs(ref: ArrayLike<number>, got: ArrayLike<number>, width: number, tol: Tolerance): Comparison {
  if (ref.length !== got.length) throw new Error(`output sizes differ: ${ref.length} and ${got.length}`);
  let maxAbsDiff = 0;
  let worstRatio = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    // NaN anywhere fails: a NaN compares false, so it is counted as infinitely far.
    const ratio = Number.isNaN(d) ? Infinity : d / (tol.atol + tol.rtol * Math.abs(ref[i]));
    maxAbsDiff = Math.max(maxAbsDiff, Number.isNaN(d) ? Infinity : d);
    worstRatio = Math.max(worstRatio, ratio);
  }
  const rows = Math.floor(ref.length / width);
  let labelFlips = 0;
  let ties = 0;
  for (let r = 0; r < rows; r++) {
    const row = (a: ArrayLike<number>): number[] => Array.from({ length: width }, (_, j) => a[r * width + j]);
    const a = row(ref);
    const b = row(got);
    const top = a.indexOf(Math.max(...a));
    const second = Math.max(...a.filter((_, j) => j !== top));
    const allowance = 2 * (tol.atol + tol.rtol * Math.abs(a[top]));
    if (width > 1 && a[top] - second <= allowance) {
      ties++;
      continue;
    }
    if (b.indexOf(Math.max(...b)) !== top) labelFlips++;
  }
  return { elements: ref.length, rows, maxAbsDiff, worstRatio, labelFlips, ties, pass: worstRatio <= 1 && labelFlips === 0 };
}
