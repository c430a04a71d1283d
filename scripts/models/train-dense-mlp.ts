/**
 * Trains a small dense classifier in plain TypeScript: `inputs -> hidden ReLU -> classes`,
 * softmax cross-entropy, Adam on shuffled minibatches with cosine learning-rate decay, a
 * fixed seed. For dense inputs of a few dozen numbers (name-gender's sparse n-gram trainer
 * is train-name-gender.ts). Float64 master weights; the float32 layers it returns are what
 * the ONNX file holds, and `forwardProbabilities` computes what onnxruntime should.
 */
import type { DenseLayer } from './onnx-writer.ts';
import { gaussian, mulberry32, shuffleInPlace } from './prng.ts';

export interface DenseTrainOptions {
  seed: number;
  hidden: number;
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Decoupled weight decay (AdamW), per step, times the learning rate. */
  weightDecay: number;
}

export interface DenseTrainResult {
  layers: [DenseLayer, DenseLayer];
  epochLosses: number[];
  trainAccuracy: number;
  trainSeconds: number;
}

/** Softmax probabilities of one row `x` (accumulated in float64). */
export function forwardProbabilities(layers: readonly DenseLayer[], x: ArrayLike<number>): number[] {
  let current: ArrayLike<number> = x;
  for (const layer of layers) {
    const out = new Float64Array(layer.outFeatures);
    out.set(layer.bias);
    for (let i = 0; i < layer.inFeatures; i++) {
      const xi = current[i];
      if (xi === 0) continue;
      const base = i * layer.outFeatures;
      for (let k = 0; k < layer.outFeatures; k++) out[k] += xi * layer.weight[base + k];
    }
    if (layer.activation === 'relu') for (let k = 0; k < out.length; k++) if (out[k] < 0) out[k] = 0;
    current = out;
  }
  const z = Array.from(current);
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

const argmax = (p: number[]): number => p.reduce((best, v, i) => (v > p[best] ? i : best), 0);

/**
 * Fits the net on `rows` (row-major, `inputs` values each) with class indices `labels`.
 * Deterministic given the seed.
 */
export function trainDenseMlp(rows: Float32Array, labels: Int32Array, inputs: number, classes: number, options: DenseTrainOptions): DenseTrainResult {
  const started = performance.now();
  const n = labels.length;
  if (rows.length !== n * inputs) throw new Error(`${rows.length} values for ${n} rows of ${inputs}`);
  const rng = mulberry32(options.seed);
  const normal = gaussian(rng);
  const H = options.hidden;
  const C = classes;
  // He initialisation for the ReLU layer, LeCun for the output layer.
  const p = { w1: new Float64Array(inputs * H), b1: new Float64Array(H), w2: new Float64Array(H * C), b2: new Float64Array(C) };
  for (let i = 0; i < p.w1.length; i++) p.w1[i] = normal() * Math.sqrt(2 / inputs);
  for (let i = 0; i < p.w2.length; i++) p.w2[i] = normal() * Math.sqrt(1 / H);
  // Output biases start at the log class priors, so the first epochs learn features, not the prior.
  for (let c = 0; c < C; c++) p.b2[c] = Math.log(Math.max(1, labels.filter((y) => y === c).length) / n);
  const g = { w1: new Float64Array(p.w1.length), b1: new Float64Array(H), w2: new Float64Array(p.w2.length), b2: new Float64Array(C) };
  const m = { w1: new Float64Array(p.w1.length), b1: new Float64Array(H), w2: new Float64Array(p.w2.length), b2: new Float64Array(C) };
  const v = { w1: new Float64Array(p.w1.length), b1: new Float64Array(H), w2: new Float64Array(p.w2.length), b2: new Float64Array(C) };
  const keys = ['w1', 'b1', 'w2', 'b2'] as const;
  const beta1 = 0.9;
  const beta2 = 0.999;
  const eps = 1e-8;
  const h = new Float64Array(H);
  const dh = new Float64Array(H);
  const z = new Float64Array(C);
  const epochLosses: number[] = [];
  const order = Array.from({ length: n }, (_, i) => i);
  let step = 0;
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    shuffleInPlace(order, rng);
    const lr = options.learningRate * 0.5 * (1 + Math.cos((Math.PI * epoch) / options.epochs));
    let lossSum = 0;
    for (let start = 0; start < n; start += options.batchSize) {
      const end = Math.min(n, start + options.batchSize);
      const scale = 1 / (end - start);
      for (let b = start; b < end; b++) {
        const r = order[b];
        const x = rows.subarray(r * inputs, (r + 1) * inputs);
        for (let k = 0; k < H; k++) h[k] = p.b1[k];
        for (let i = 0; i < inputs; i++) {
          const xi = x[i];
          if (xi === 0) continue;
          const base = i * H;
          for (let k = 0; k < H; k++) h[k] += xi * p.w1[base + k];
        }
        for (let k = 0; k < H; k++) if (h[k] < 0) h[k] = 0;
        let zMax = -Infinity;
        for (let c = 0; c < C; c++) {
          let s = p.b2[c];
          for (let k = 0; k < H; k++) s += h[k] * p.w2[k * C + c];
          z[c] = s;
          if (s > zMax) zMax = s;
        }
        let sum = 0;
        for (let c = 0; c < C; c++) sum += (z[c] = Math.exp(z[c] - zMax));
        const y = labels[r];
        lossSum -= Math.log(Math.max(z[y] / sum, 1e-12));
        // z now holds exp(logit - max); turn it into dLoss/dlogit, scaled for the minibatch mean.
        for (let c = 0; c < C; c++) z[c] = (z[c] / sum - (c === y ? 1 : 0)) * scale;
        for (let k = 0; k < H; k++) {
          let d = 0;
          for (let c = 0; c < C; c++) {
            g.w2[k * C + c] += h[k] * z[c];
            d += p.w2[k * C + c] * z[c];
          }
          dh[k] = h[k] > 0 ? d : 0;
          g.b1[k] += dh[k];
        }
        for (let c = 0; c < C; c++) g.b2[c] += z[c];
        for (let i = 0; i < inputs; i++) {
          const xi = x[i];
          if (xi === 0) continue;
          const base = i * H;
          for (let k = 0; k < H; k++) g.w1[base + k] += xi * dh[k];
        }
      }
      step++;
      const c1 = 1 - beta1 ** step;
      const c2 = 1 - beta2 ** step;
      for (const key of keys) {
        const decay = key.startsWith('w') ? options.weightDecay : 0;
        const [pk, gk, mk, vk] = [p[key], g[key], m[key], v[key]];
        for (let i = 0; i < pk.length; i++) {
          const gi = gk[i];
          mk[i] = beta1 * mk[i] + (1 - beta1) * gi;
          vk[i] = beta2 * vk[i] + (1 - beta2) * gi * gi;
          pk[i] -= lr * (mk[i] / c1 / (Math.sqrt(vk[i] / c2) + eps) + decay * pk[i]);
          gk[i] = 0;
        }
      }
    }
    epochLosses.push(lossSum / n);
  }
  const layers: [DenseLayer, DenseLayer] = [
    { inFeatures: inputs, outFeatures: H, weight: Float32Array.from(p.w1), bias: Float32Array.from(p.b1), activation: 'relu' },
    { inFeatures: H, outFeatures: C, weight: Float32Array.from(p.w2), bias: Float32Array.from(p.b2), activation: 'none' },
  ];
  let correct = 0;
  for (let r = 0; r < n; r++) if (argmax(forwardProbabilities(layers, rows.subarray(r * inputs, (r + 1) * inputs))) === labels[r]) correct++;
  return { layers, epochLosses, trainAccuracy: correct / n, trainSeconds: (performance.now() - started) / 1000 };
}
