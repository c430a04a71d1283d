/**
 * The per-model configuration file: `<repository>/<model>/config.yaml`, optionally
 * overridden per version by `<repository>/<model>/<version>/config.yaml`.
 *
 * It is checked against the ONNX session's own metadata when the model loads; a model
 * whose config and graph disagree is skipped with the reason, never served.
 *
 * Here are the type, the defaults a file may leave out ({@link MODEL_DEFAULTS}, the one place
 * they are stated) and the parser that validates a file and fills them in. Scanning the
 * repository and checking against the graph are in `model-repository.ts`.
 */
import type { CharNgramOptions } from '../preprocess/char-ngrams.ts';

/** Tensor element types, named as in the Open Inference Protocol. */
export type Datatype = 'FP32' | 'FP64' | 'INT32' | 'INT64' | 'BOOL' | 'UINT8' | 'INT8';

/** onnxruntime's tensor type names for our datatypes. */
export const ORT_TYPE: Record<Datatype, string> = {
  FP32: 'float32',
  FP64: 'float64',
  INT32: 'int32',
  INT64: 'int64',
  BOOL: 'bool',
  UINT8: 'uint8',
  INT8: 'int8',
};

const DATATYPES = Object.keys(ORT_TYPE) as Datatype[];

export interface TensorSpec {
  name: string;
  datatype: Datatype;
  /** Dimensions; -1 marks a dynamic one. The first is the batch dimension and must be -1. */
  shape: number[];
}

export type PreprocessingSpec = CharNgramOptions;

/**
 * A model's batching settings, as its config.yaml states them. What the two batchers make of
 * them is decided in core/batching/plan.ts: in every pool the API's edge batcher gathers
 * concurrent requests into one job of at most min(16, maxBatchSize) rows; a gpu worker merges
 * jobs up to these settings, a cpu worker runs each job alone.
 */
export interface BatchingSpec {
  /** @defaultValue 'fixed' */
  policy: 'fixed' | 'aimd' | 'predictive';
  /** Most rows in one inference. @defaultValue 32 */
  maxBatchSize: number;
  /** Longest time the oldest request of a batch waits for company. @defaultValue 5 */
  maxDelayMs: number;
  /** Latency objective of one batch's inference, for the adaptive policies. @defaultValue 50 */
  sloMs: number;
}

export interface CacheSpec {
  /** @defaultValue true */
  enabled: boolean;
  /** @defaultValue 300000 */
  ttlMs: number;
}

export interface RetrySpec {
  /** Total attempts, first included. @defaultValue 3 (two retries) */
  attempts: number;
  /** Fixed delay between attempts. @defaultValue 1000 */
  backoffMs: number;
}

export interface ModelConfig {
  name: string;
  description?: string;
  /** Worker pool that runs it. @defaultValue 'cpu' */
  pool: 'cpu' | 'gpu';
  /** `classification` yields label, score and probabilities; `raw` only output tensors. @defaultValue 'classification' if labels are given */
  task: 'classification' | 'raw';
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  /** Class names, in the order of the classification output's last dimension. */
  labels?: string[];
  /** Name of the output holding class scores. @defaultValue the first output */
  scoresOutput?: string;
  /** Whether that output holds `probabilities` or `logits` (softmax is applied). @defaultValue 'probabilities' */
  scoresKind: 'probabilities' | 'logits';
  /** Turns `text` input into the model's single input tensor, in the worker. */
  preprocessing?: PreprocessingSpec;
  cache: CacheSpec;
  batching: BatchingSpec;
  retry: RetrySpec;
  /** Most rows one request may carry. @defaultValue 256 */
  maxRowsPerRequest: number;
  /**
   * Residency under a worker memory budget (`workers.modelMemoryBytes`, docs/RESIDENCY.md):
   * `pinned: true` keeps every version loaded in every worker of its pool, never evicted. Absent: loaded on demand.
   */
  residency?: ResidencySpec;
}

export interface ResidencySpec {
  /** Keep loaded: counts against the budget, and a worker whose pinned versions alone exceed it refuses to start. */
  pinned: boolean;
}

/** The fields a config.yaml may leave out that get a fixed default ({@link MODEL_DEFAULTS}). */
export type ModelDefaults = Pick<ModelConfig, 'pool' | 'scoresKind' | 'cache' | 'batching' | 'retry' | 'maxRowsPerRequest'>;

type DeepReadonly<T> = { readonly [K in keyof T]: T[K] extends object ? DeepReadonly<T[K]> : T[K] };

function frozen<T extends object>(o: T): DeepReadonly<T> {
  for (const v of Object.values(o)) if (typeof v === 'object' && v !== null) frozen(v);
  return Object.freeze(o) as DeepReadonly<T>;
}

/**
 * What a model gets for each field its config.yaml leaves out: the one statement of these
 * numbers. The parser, the Kubernetes planner and the model builds read it; the
 * `@defaultValue`s above and the README's model table say the same (test/unit/models/config.test.ts).
 * `task` and `scoresOutput` are not here: their defaults follow from the rest of the file.
 */
export const MODEL_DEFAULTS: DeepReadonly<ModelDefaults> = frozen({
  pool: 'cpu',
  scoresKind: 'probabilities',
  cache: { enabled: true, ttlMs: 300_000 },
  batching: { policy: 'fixed', maxBatchSize: 32, maxDelayMs: 5, sloMs: 50 },
  retry: { attempts: 3, backoffMs: 1000 },
  maxRowsPerRequest: 256,
});

/** What a config.yaml holds: a {@link ModelConfig} whose defaulted fields may be left out (the name defaults to the folder's). */
export type ModelConfigFile = Omit<ModelConfig, 'name' | 'task' | 'scoresOutput' | keyof ModelDefaults> &
  Partial<Pick<ModelConfig, 'name' | 'task' | 'scoresOutput' | 'pool' | 'scoresKind' | 'maxRowsPerRequest'>> & {
    cache?: Partial<CacheSpec>;
    batching?: Partial<BatchingSpec>;
    residency?: Partial<ResidencySpec>;
    retry?: Partial<RetrySpec>;
  };

type Raw = Record<string, unknown>;

function fail(msg: string): never {
  throw new Error(msg);
}

function tensorSpecs(raw: unknown, what: string): TensorSpec[] {
  if (!Array.isArray(raw) || raw.length === 0) fail(`'${what}' must list at least one tensor`);
  return raw.map((t: Raw, i) => {
    const at = `${what}[${i}]`;
    if (typeof t?.name !== 'string' || !t.name) fail(`'${at}.name' is required`);
    if (!DATATYPES.includes(t.datatype as Datatype)) fail(`'${at}.datatype' must be one of ${DATATYPES.join(', ')}`);
    const shape = t.shape;
    if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => Number.isInteger(d) && (d === -1 || d > 0))) {
      fail(`'${at}.shape' must be a list of positive integers or -1`);
    }
    if (shape[0] !== -1) fail(`'${at}.shape' must start with the dynamic batch dimension -1`);
    return { name: t.name, datatype: t.datatype as Datatype, shape: shape as number[] };
  });
}

/**
 * Validates a parsed config.yaml ({@link ModelConfigFile}) and fills in {@link MODEL_DEFAULTS}.
 * Throws with the field at fault.
 */
export function parseModelConfig(raw: unknown, fallbackName: string): ModelConfig {
  if (typeof raw !== 'object' || raw === null) fail('config.yaml must hold a mapping');
  const D = MODEL_DEFAULTS;
  const r = raw as Raw;
  const pool = (r.pool ?? D.pool) as ModelConfig['pool'];
  if (pool !== 'cpu' && pool !== 'gpu') fail(`'pool' must be cpu or gpu`);
  const inputs = tensorSpecs(r.inputs, 'inputs');
  const outputs = tensorSpecs(r.outputs, 'outputs');
  const labels = r.labels as string[] | undefined;
  if (labels !== undefined && (!Array.isArray(labels) || !labels.every((l) => typeof l === 'string')))
    fail(`'labels' must be a list of strings`);
  const task = (r.task ?? (labels ? 'classification' : 'raw')) as ModelConfig['task'];
  if (task !== 'classification' && task !== 'raw') fail(`'task' must be classification or raw`);
  const scoresOutput = (r.scoresOutput as string | undefined) ?? outputs[0].name;
  const scores = outputs.find((o) => o.name === scoresOutput);
  if (!scores) fail(`'scoresOutput' names no output: ${scoresOutput}`);
  if (task === 'classification') {
    if (!labels) fail(`'labels' is required for a classification model`);
    const width = scores.shape[scores.shape.length - 1];
    if (width !== -1 && width !== labels.length)
      fail(`'labels' has ${labels.length} names but output '${scoresOutput}' has ${width} classes`);
  }
  const scoresKind = (r.scoresKind ?? D.scoresKind) as ModelConfig['scoresKind'];
  if (scoresKind !== 'probabilities' && scoresKind !== 'logits') fail(`'scoresKind' must be probabilities or logits`);
  const pre = r.preprocessing as Raw | undefined;
  if (pre) {
    if (pre.type !== 'char-ngrams') fail(`'preprocessing.type' must be char-ngrams`);
    if (!Number.isInteger(pre.dims) || (pre.dims as number) <= 0) fail(`'preprocessing.dims' must be a positive integer`);
    if (inputs.length !== 1 || inputs[0].shape.length !== 2 || inputs[0].shape[1] !== pre.dims) {
      fail(`'preprocessing' yields [-1, ${pre.dims}] but the model's input is ${JSON.stringify(inputs.map((i) => i.shape))}`);
    }
  }
  const num = (v: unknown, d: number, at: string, min = 0): number => {
    if (v === undefined) return d;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min) fail(`'${at}' must be a number >= ${min}`);
    return v;
  };
  const cache = (r.cache ?? {}) as Raw;
  const batching = (r.batching ?? {}) as Raw;
  const retry = (r.retry ?? {}) as Raw;
  const residency = r.residency as Raw | undefined;
  if (residency !== undefined && (typeof residency !== 'object' || residency === null)) fail(`'residency' must be a mapping`);
  if (residency?.pinned !== undefined && typeof residency.pinned !== 'boolean') fail(`'residency.pinned' must be true or false`);
  const policy = (batching.policy ?? D.batching.policy) as ModelConfig['batching']['policy'];
  if (!['fixed', 'aimd', 'predictive'].includes(policy)) fail(`'batching.policy' must be fixed, aimd or predictive`);
  return {
    name: typeof r.name === 'string' ? r.name : fallbackName,
    description: typeof r.description === 'string' ? r.description : undefined,
    pool,
    task,
    inputs,
    outputs,
    labels,
    scoresOutput,
    scoresKind,
    preprocessing: pre as ModelConfig['preprocessing'],
    cache: {
      // Anything but an explicit `false` leaves the cache on, as it always has.
      enabled: cache.enabled === undefined ? D.cache.enabled : cache.enabled !== false,
      ttlMs: num(cache.ttlMs, D.cache.ttlMs, 'cache.ttlMs'),
    },
    batching: {
      policy,
      maxBatchSize: num(batching.maxBatchSize, D.batching.maxBatchSize, 'batching.maxBatchSize', 1),
      maxDelayMs: num(batching.maxDelayMs, D.batching.maxDelayMs, 'batching.maxDelayMs'),
      sloMs: num(batching.sloMs, D.batching.sloMs, 'batching.sloMs', 1),
    },
    retry: {
      attempts: num(retry.attempts, D.retry.attempts, 'retry.attempts', 1),
      backoffMs: num(retry.backoffMs, D.retry.backoffMs, 'retry.backoffMs'),
    },
    maxRowsPerRequest: num(r.maxRowsPerRequest, D.maxRowsPerRequest, 'maxRowsPerRequest', 1),
    ...(residency?.pinned ? { residency: { pinned: true } } : {}),
  };
}
