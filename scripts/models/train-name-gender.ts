/**
 * Trains the name-gender classifier in plain TypeScript: hashed character n-grams
 * (core/preprocess/char-ngrams.ts, the same code the server runs) into a
 * `dims -> hidden ReLU -> 2` MLP, softmax cross-entropy, Adam on minibatches, fixed seed.
 *
 * The class prior is then corrected. A net fit on the full training set over-fits it
 * (its training predictions say little about its bias on new names), so the bias is
 * measured out of fold: K nets, each fit with one fold of the training set left out,
 * score the names they did not see; the offset on the female logit that makes the
 * share of those out-of-fold predictions that are `female` equal the training share
 * is added to the final net's female output bias. The held-out set is not used here.
 */
import { charNgramFeatures, type CharNgramOptions } from '../../core/preprocess/char-ngrams.ts';
import type { DenseLayer } from './onnx-writer.ts';
import type { LabelledName, NameGenderLabel } from './names-dataset.ts';
import { gaussian, mulberry32, shuffleInPlace } from './prng.ts';

export const CLASSES = ['female', 'male'] as const satisfies readonly NameGenderLabel[];

export interface NameGenderTrainOptions {
  seed: number;
  preprocessing: CharNgramOptions;
  hidden: number;
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Decoupled weight decay (AdamW), per step, times the learning rate. */
  weightDecay: number;
  /** Folds of the cross-fitting that calibrates the class prior (see trainNameGender). */
  calibrationFolds: number;
}

/** Feature vector of one name, stored sparsely (most of the `dims` slots are zero). */
export interface SparseRow {
  index: Int32Array;
  value: Float32Array;
}

export function sparseFeatures(name: string, options: CharNgramOptions, scratch?: Float32Array): SparseRow {
  const dense = charNgramFeatures(name, options, scratch);
  const index: number[] = [];
  const value: number[] = [];
  for (let i = 0; i < dense.length; i++) {
    if (dense[i] !== 0) {
      index.push(i);
      value.push(dense[i]);
    }
  }
  return { index: Int32Array.from(index), value: Float32Array.from(value) };
}

/** The MLP's parameters; W1 is [dims, hidden] row-major, W2 [hidden, 2]. */
export interface NameGenderWeights {
  dims: number;
  hidden: number;
  w1: Float32Array;
  b1: Float32Array;
  w2: Float32Array;
  b2: Float32Array;
}

/**
 * Forward pass with float32 parameters, accumulating in float64. Returns the logits
 * [female, male] of one row; `hiddenOut` receives the ReLU activations.
 */
export function forwardLogits(weights: NameGenderWeights, row: SparseRow, hiddenOut?: Float64Array): [number, number] {
  const { hidden, w1, b1, w2, b2 } = weights;
  const h = hiddenOut ?? new Float64Array(hidden);
  for (let k = 0; k < hidden; k++) h[k] = b1[k];
  for (let n = 0; n < row.index.length; n++) {
    const x = row.value[n];
    const base = row.index[n] * hidden;
    for (let k = 0; k < hidden; k++) h[k] += x * w1[base + k];
  }
  let z0 = b2[0];
  let z1 = b2[1];
  for (let k = 0; k < hidden; k++) {
    if (h[k] < 0) h[k] = 0;
    z0 += h[k] * w2[2 * k];
    z1 += h[k] * w2[2 * k + 1];
  }
  return [z0, z1];
}

export function softmax2(z: [number, number]): [number, number] {
  const m = Math.max(z[0], z[1]);
  const e0 = Math.exp(z[0] - m);
  const e1 = Math.exp(z[1] - m);
  return [e0 / (e0 + e1), e1 / (e0 + e1)];
}

/** Class index (0 female, 1 male) that the argmax over the probabilities picks. */
export function predictIndex(weights: NameGenderWeights, row: SparseRow, hiddenScratch?: Float64Array): number {
  const z = forwardLogits(weights, row, hiddenScratch);
  return z[1] > z[0] ? 1 : 0;
}

export function toDenseLayers(weights: NameGenderWeights): DenseLayer[] {
  return [
    { inFeatures: weights.dims, outFeatures: weights.hidden, weight: weights.w1, bias: weights.b1, activation: 'relu' },
    { inFeatures: weights.hidden, outFeatures: 2, weight: weights.w2, bias: weights.b2, activation: 'none' },
  ];
}

interface Adam {
  m: Float64Array;
  v: Float64Array;
}

function adam(size: number): Adam {
  return { m: new Float64Array(size), v: new Float64Array(size) };
}

interface EncodedRow {
  x: SparseRow;
  /** 0 female, 1 male. */
  y: number;
}

/** Fits the MLP on `rows`; deterministic given `rng`'s state. */
function fitMlp(rows: EncodedRow[], options: NameGenderTrainOptions, rng: () => number): { weights: NameGenderWeights; epochLosses: number[] } {
  const { dims } = options.preprocessing;
  const H = options.hidden;
  const normal = gaussian(rng);
  const femaleShare = rows.filter((r) => r.y === 0).length / rows.length;

  const weights: NameGenderWeights = {
    dims,
    hidden: H,
    w1: new Float32Array(dims * H),
    b1: new Float32Array(H),
    w2: new Float32Array(H * 2),
    b2: new Float32Array(2),
  };
  // Float64 master copies; the float32 arrays mirror them for the forward pass.
  const p = { w1: new Float64Array(dims * H), b1: new Float64Array(H), w2: new Float64Array(H * 2), b2: new Float64Array(2) };
  // He initialisation. The inputs are L2-normalised with ~25 non-zeros, so the
  // effective fan-in of the first layer is about 25, not `dims`.
  const std1 = Math.sqrt(2 / 25);
  for (let i = 0; i < p.w1.length; i++) p.w1[i] = normal() * std1;
  const std2 = Math.sqrt(1 / H);
  for (let i = 0; i < p.w2.length; i++) p.w2[i] = normal() * std2;
  p.b2[0] = Math.log(femaleShare / (1 - femaleShare));
  weights.w1.set(p.w1);
  weights.w2.set(p.w2);
  weights.b2.set(p.b2);

  const opt = { w1: adam(p.w1.length), b1: adam(H), w2: adam(p.w2.length), b2: adam(2) };
  const g = { w1: new Float64Array(p.w1.length), b1: new Float64Array(H), w2: new Float64Array(p.w2.length), b2: new Float64Array(2) };
  const touched = new Uint8Array(dims);
  const beta1 = 0.9;
  const beta2 = 0.999;
  const eps = 1e-8;
  let step = 0;
  const h = new Float64Array(H);
  const dh = new Float64Array(H);
  const epochLosses: number[] = [];

  const update = (param: Float64Array, grad: Float64Array, state: Adam, lr: number, decay: number, c1: number, c2: number, from = 0, to = param.length) => {
    const { m, v } = state;
    for (let i = from; i < to; i++) {
      const gi = grad[i];
      m[i] = beta1 * m[i] + (1 - beta1) * gi;
      v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
      param[i] -= lr * (m[i] / c1 / (Math.sqrt(v[i] / c2) + eps) + decay * param[i]);
      grad[i] = 0;
    }
  };

  const order = rows.map((_, i) => i);
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    shuffleInPlace(order, rng);
    // Cosine decay of the learning rate over the epochs.
    const lr = options.learningRate * 0.5 * (1 + Math.cos((Math.PI * epoch) / options.epochs));
    let lossSum = 0;
    for (let start = 0; start < order.length; start += options.batchSize) {
      const end = Math.min(order.length, start + options.batchSize);
      const scale = 1 / (end - start);
      for (let b = start; b < end; b++) {
        const { x, y } = rows[order[b]];
        const prob = softmax2(forwardLogits(weights, x, h));
        lossSum -= Math.log(Math.max(prob[y], 1e-12));
        const d0 = (prob[0] - (y === 0 ? 1 : 0)) * scale;
        const d1 = (prob[1] - (y === 1 ? 1 : 0)) * scale;
        g.b2[0] += d0;
        g.b2[1] += d1;
        for (let k = 0; k < H; k++) {
          g.w2[2 * k] += h[k] * d0;
          g.w2[2 * k + 1] += h[k] * d1;
          dh[k] = h[k] > 0 ? weights.w2[2 * k] * d0 + weights.w2[2 * k + 1] * d1 : 0;
          g.b1[k] += dh[k];
        }
        for (let n = 0; n < x.index.length; n++) {
          const j = x.index[n];
          touched[j] = 1;
          const xv = x.value[n];
          const base = j * H;
          for (let k = 0; k < H; k++) g.w1[base + k] += xv * dh[k];
        }
      }
      step++;
      const c1 = 1 - Math.pow(beta1, step);
      const c2 = 1 - Math.pow(beta2, step);
      // Lazy (sparse) Adam on W1: only the rows that had a gradient this step move,
      // as in sparse Adam implementations; dense Adam on the small tensors.
      for (let j = 0; j < dims; j++) {
        if (touched[j]) {
          update(p.w1, g.w1, opt.w1, lr, options.weightDecay, c1, c2, j * H, (j + 1) * H);
          weights.w1.set(p.w1.subarray(j * H, (j + 1) * H), j * H);
          touched[j] = 0;
        }
      }
      update(p.b1, g.b1, opt.b1, lr, 0, c1, c2);
      update(p.w2, g.w2, opt.w2, lr, options.weightDecay, c1, c2);
      update(p.b2, g.b2, opt.b2, lr, 0, c1, c2);
      weights.b1.set(p.b1);
      weights.w2.set(p.w2);
      weights.b2.set(p.b2);
    }
    epochLosses.push(lossSum / order.length);
  }
  return { weights, epochLosses };
}

/** Female-minus-male logit of each row. */
function margins(weights: NameGenderWeights, rows: EncodedRow[]): number[] {
  const h = new Float64Array(weights.hidden);
  return rows.map((r) => {
    const z = forwardLogits(weights, r.x, h);
    return z[0] - z[1];
  });
}

/** Offset that, added to the margins, makes `share` of them positive (female). */
function offsetForShare(values: number[], share: number): number {
  const sorted = [...values].sort((a, b) => b - a);
  const k = Math.round(share * sorted.length);
  if (k <= 0) return -(sorted[0] + 1e-3);
  if (k >= sorted.length) return -(sorted[sorted.length - 1] - 1e-3);
  return -(sorted[k - 1] + sorted[k]) / 2;
}

function accuracyOf(values: number[], rows: EncodedRow[], offset: number): number {
  let correct = 0;
  values.forEach((m, i) => {
    if ((m + offset > 0 ? 0 : 1) === rows[i].y) correct++;
  });
  return correct / rows.length;
}

function femaleShareOf(values: number[], offset: number): number {
  return values.filter((m) => m + offset > 0).length / values.length;
}

export interface NameGenderTrainResult {
  weights: NameGenderWeights;
  trainingClassDistribution: { female: number; male: number };
  /** Offset added to the female output bias to match the predicted share to the prior. */
  priorCorrection: {
    method: string;
    folds: number;
    femaleLogitOffset: number;
    outOfFoldPredictedFemaleShareBefore: number;
    outOfFoldPredictedFemaleShareAfter: number;
    outOfFoldAccuracyBefore: number;
    outOfFoldAccuracyAfter: number;
  };
  trainAccuracy: number;
  epochLosses: number[];
  trainSeconds: number;
}

export function trainNameGender(train: LabelledName[], options: NameGenderTrainOptions): NameGenderTrainResult {
  const started = performance.now();
  const rng = mulberry32(options.seed);
  const scratch = new Float32Array(options.preprocessing.dims);
  const rows: EncodedRow[] = train.map((row) => ({
    x: sparseFeatures(row.name, options.preprocessing, scratch),
    y: row.label === 'female' ? 0 : 1,
  }));
  const femaleShare = rows.filter((r) => r.y === 0).length / rows.length;

  // Stratified folds.
  const K = options.calibrationFolds;
  const fold = new Int32Array(rows.length);
  for (const y of [0, 1]) {
    const idx = shuffleInPlace(
      rows.map((r, i) => (r.y === y ? i : -1)).filter((i) => i >= 0),
      rng,
    );
    idx.forEach((i, n) => (fold[i] = n % K));
  }
  const oofRows: EncodedRow[] = [];
  const oofMargins: number[] = [];
  for (let f = 0; f < K; f++) {
    const fitRows = rows.filter((_, i) => fold[i] !== f);
    const heldRows = rows.filter((_, i) => fold[i] === f);
    const { weights } = fitMlp(fitRows, options, rng);
    oofRows.push(...heldRows);
    oofMargins.push(...margins(weights, heldRows));
  }
  const offset = Math.fround(offsetForShare(oofMargins, femaleShare));

  const { weights, epochLosses } = fitMlp(rows, options, rng);
  weights.b2[0] = Math.fround(weights.b2[0] + offset);
  const trainMargins = margins(weights, rows);

  return {
    weights,
    trainingClassDistribution: { female: femaleShare, male: 1 - femaleShare },
    priorCorrection: {
      method: `${K}-fold out-of-fold margins; offset added to the female output bias`,
      folds: K,
      femaleLogitOffset: offset,
      outOfFoldPredictedFemaleShareBefore: femaleShareOf(oofMargins, 0),
      outOfFoldPredictedFemaleShareAfter: femaleShareOf(oofMargins, offset),
      outOfFoldAccuracyBefore: accuracyOf(oofMargins, oofRows, 0),
      outOfFoldAccuracyAfter: accuracyOf(oofMargins, oofRows, offset),
    },
    trainAccuracy: accuracyOf(trainMargins, rows, 0),
    epochLosses,
    trainSeconds: (performance.now() - started) / 1000,
  };
}
