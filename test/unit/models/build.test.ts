/**
 * The committed demo models (models/name-gender, models/mlp-bench, models/spam-mlp), as written by
 * scripts/build-models.ts: loaded with the real onnxruntime-node, no server involved.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { charNgramFeatures, type CharNgramOptions } from '../../../core/preprocess/char-ngrams.ts';
import type { ModelConfig } from '../../../core/models/config.ts';
import { loadNameGenderSplit } from '../../../scripts/models/names-dataset.ts';
import { loadSpamSplit, messageText, spamFeatures, SPAM_FEATURES } from '../../../scripts/models/spam-dataset.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const modelFile = (name: string) => path.join(ROOT, 'models', name, '1', 'model.onnx');
const readConfig = (name: string) => parse(readFileSync(path.join(ROOT, 'models', name, 'config.yaml'), 'utf8')) as ModelConfig;

describe('name-gender model', () => {
  const config = readConfig('name-gender');
  const pre: CharNgramOptions = config.preprocessing ?? { type: 'char-ngrams', dims: 0 };
  const dims = pre.dims;

  it('has char-ngrams preprocessing', () => {
    expect(config.preprocessing?.type).toBe('char-ngrams');
    expect(dims).toBeGreaterThan(0);
  });

  async function classify(session: InferenceSession, names: string[]): Promise<{ probs: Float32Array; dims: readonly number[] }> {
    const data = new Float32Array(names.length * dims);
    names.forEach((name, i) => charNgramFeatures(name, pre, data.subarray(i * dims, (i + 1) * dims)));
    const out = await session.run({ features: new Tensor('float32', data, [names.length, dims]) });
    return { probs: out.probabilities.data as Float32Array, dims: out.probabilities.dims };
  }

  it('matches its config: names, shapes, labels', async () => {
    const session = await InferenceSession.create(modelFile('name-gender'));
    try {
      expect(session.inputNames).toEqual(['features']);
      expect(session.outputNames).toEqual(['probabilities']);
      expect(config.inputs).toEqual([{ name: 'features', datatype: 'FP32', shape: [-1, dims] }]);
      expect(config.outputs).toEqual([{ name: 'probabilities', datatype: 'FP32', shape: [-1, 2] }]);
      expect(config.labels).toEqual(['female', 'male']);
      const input = session.inputMetadata[0];
      if (input.isTensor) expect(input.shape[1]).toBe(dims);
    } finally {
      await session.release();
    }
  });

  it('gives probability rows that sum to 1 and classifies obvious names', async () => {
    const session = await InferenceSession.create(modelFile('name-gender'));
    try {
      const female = ['Maria', 'Jennifer', 'Elizabeth', 'Susan'];
      const male = ['John', 'Michael', 'Robert', 'David'];
      const { probs, dims: outDims } = await classify(session, [...female, ...male]);
      expect(outDims).toEqual([female.length + male.length, 2]);
      for (let i = 0; i < female.length + male.length; i++) {
        expect(probs[2 * i] + probs[2 * i + 1]).toBeCloseTo(1, 5);
        const predicted = probs[2 * i] > probs[2 * i + 1] ? 'female' : 'male';
        expect(predicted, [...female, ...male][i]).toBe(i < female.length ? 'female' : 'male');
      }
    } finally {
      await session.release();
    }
  });

  it('keeps its held-out accuracy and class balance', async () => {
    const { train, holdout } = loadNameGenderSplit();
    const session = await InferenceSession.create(modelFile('name-gender'));
    try {
      const { probs } = await classify(
        session,
        holdout.map((r) => r.name),
      );
      let correct = 0;
      let predictedFemale = 0;
      holdout.forEach((row, i) => {
        const predicted = probs[2 * i] > probs[2 * i + 1] ? 'female' : 'male';
        if (predicted === row.label) correct++;
        if (predicted === 'female') predictedFemale++;
      });
      expect(correct / holdout.length).toBeGreaterThan(0.8);
      const q = train.filter((r) => r.label === 'female').length / train.length;
      const n = holdout.length;
      const chi2 = (predictedFemale - n * q) ** 2 / (n * q) + (n - predictedFemale - n * (1 - q)) ** 2 / (n * (1 - q));
      expect(chi2).toBeLessThan(6.635); // chi-square, 1 df, alpha 0.01
    } finally {
      await session.release();
    }
  });
});

describe('loadNameGenderSplit', () => {
  it('is deterministic, stratified and disjoint', () => {
    const started = performance.now();
    const a = loadNameGenderSplit();
    const b = loadNameGenderSplit();
    expect(performance.now() - started).toBeLessThan(1000);
    expect(a).toEqual(b);
    expect(a.classes).toEqual(['female', 'male']);
    expect(a.holdout.length).toBeGreaterThanOrEqual(1000);
    const key = (name: string) => name.trim().toLowerCase();
    const trainNames = new Set(a.train.map((r) => key(r.name)));
    expect(trainNames.size).toBe(a.train.length);
    expect(a.holdout.filter((r) => trainNames.has(key(r.name)))).toEqual([]);
    const share = (rows: { label: string }[]) => rows.filter((r) => r.label === 'female').length / rows.length;
    expect(Math.abs(share(a.train) - share(a.holdout))).toBeLessThan(0.01);
    expect(a.holdout.length / (a.train.length + a.holdout.length)).toBeCloseTo(0.2, 2);
  });
});

describe('mlp-bench model', () => {
  it('matches its config and runs a batch', async () => {
    const config = readConfig('mlp-bench');
    expect(config.inputs).toEqual([{ name: 'input', datatype: 'FP32', shape: [-1, 512] }]);
    expect(config.outputs).toEqual([{ name: 'logits', datatype: 'FP32', shape: [-1, 10] }]);
    expect(config.labels).toHaveLength(10);
    const session = await InferenceSession.create(modelFile('mlp-bench'));
    try {
      expect(session.inputNames).toEqual(['input']);
      expect(session.outputNames).toEqual(['logits']);
      const rows = 4;
      const data = Float32Array.from({ length: rows * 512 }, (_, i) => Math.sin(i));
      const out = await session.run({ input: new Tensor('float32', data, [rows, 512]) });
      expect(out.logits.dims).toEqual([rows, 10]);
      const logits = out.logits.data as Float32Array;
      expect(logits.every((v) => Number.isFinite(v))).toBe(true);
      expect(new Set(logits).size).toBeGreaterThan(1);
    } finally {
      await session.release();
    }
  });
});

describe('spam-mlp model', () => {
  const config = readConfig('spam-mlp');
  const dims = SPAM_FEATURES.dims;

  it('matches its config: a 64-wide numeric input, ham / spam, cpu pool, cache off, fixed batching', async () => {
    expect(config.inputs).toEqual([{ name: 'features', datatype: 'FP32', shape: [-1, dims] }]);
    expect(config.outputs).toEqual([{ name: 'probabilities', datatype: 'FP32', shape: [-1, 2] }]);
    expect(config.labels).toEqual(['ham', 'spam']);
    expect(config.preprocessing).toBeUndefined();
    expect(config.pool).toBe('cpu');
    expect(config.cache.enabled).toBe(false);
    expect(config.batching).toMatchObject({ policy: 'fixed', maxBatchSize: 32, maxDelayMs: 2 });
    const session = await InferenceSession.create(modelFile('spam-mlp'));
    try {
      expect(session.inputNames).toEqual(['features']);
      expect(session.outputNames).toEqual(['probabilities']);
    } finally {
      await session.release();
    }
  });

  it('keeps its held-out accuracy and class balance on real mail', async () => {
    const { train, holdout } = loadSpamSplit();
    const data = new Float32Array(holdout.length * dims);
    holdout.forEach((m, i) => spamFeatures(m.text, data.subarray(i * dims, (i + 1) * dims)));
    const session = await InferenceSession.create(modelFile('spam-mlp'));
    try {
      const out = await session.run({ features: new Tensor('float32', data, [holdout.length, dims]) });
      expect(out.probabilities.dims).toEqual([holdout.length, 2]);
      const probs = out.probabilities.data as Float32Array;
      let correct = 0;
      let predictedSpam = 0;
      holdout.forEach((m, i) => {
        expect(probs[2 * i] + probs[2 * i + 1]).toBeCloseTo(1, 5);
        const predicted = probs[2 * i + 1] > probs[2 * i] ? 'spam' : 'ham';
        if (predicted === m.label) correct++;
        if (predicted === 'spam') predictedSpam++;
      });
      // A quarter of the mail is spam: always answering ham would score 0.69.
      expect(correct / holdout.length).toBeGreaterThan(0.9);
      const q = train.filter((m) => m.label === 'spam').length / train.length;
      const n = holdout.length;
      const chi2 = (predictedSpam - n * q) ** 2 / (n * q) + (n - predictedSpam - n * (1 - q)) ** 2 / (n * (1 - q));
      expect(chi2).toBeLessThan(6.635); // chi-square, 1 df, alpha 0.01
    } finally {
      await session.release();
    }
  });

  it('splits the corpus deterministically, stratified, with no message on both sides', () => {
    const a = loadSpamSplit();
    expect(loadSpamSplit()).toEqual(a);
    const trainTexts = new Set(a.train.map((m) => m.text));
    expect(a.holdout.filter((m) => trainTexts.has(m.text))).toEqual([]);
    const share = (rows: { label: string }[]) => rows.filter((m) => m.label === 'spam').length / rows.length;
    expect(Math.abs(share(a.train) - share(a.holdout))).toBeLessThan(0.01);
    expect(a.holdout.length / (a.train.length + a.holdout.length)).toBeCloseTo(0.2, 2);
  });

  it('reads features from the subject and body, not the other headers', () => {
    const raw = (relay: string) => `Received: from ${relay}\nSubject: cheap meds\nX-Mailer: one\n\nbuy now $$$ free offer\n`;
    expect(messageText(raw('relay.example.org'))).toBe('cheap meds\nbuy now $$$ free offer');
    expect(spamFeatures(messageText(raw('a.example.org')))).toEqual(spamFeatures(messageText(raw('b.example.net'))));
    expect(spamFeatures(messageText(raw('a.example.org'))).some((v) => v !== 0)).toBe(true);
  });
});
