/**
 * Where batching is decided, and the only place: for a model version in a pool, how the API's
 * edge batcher gathers concurrent synchronous requests into one job, and how a worker merges
 * jobs into one inference. The API (core/api/predictor.ts), the worker (its Batcher and its
 * sizing, workers/prediction-worker.ts) and the Kubernetes planner (k8s/plan.ts,
 * k8s/capacity.ts) ask here; none of them decides.
 *
 * Two batchers, two limits:
 *   - the edge (every pool): requests of one model, version and row shape share a job, up to
 *     EDGE_MAX_ROWS rows (and the model's own maxBatchSize), waiting at most EDGE_MAX_DELAY_MS;
 *     a model whose inputs have a fixed batch dimension, or whose maxBatchSize is 1, sends
 *     every request as its own job;
 *   - the worker: the gpu pool merges jobs up to the model's `batching` (policy, maxBatchSize,
 *     maxDelayMs, sloMs); the cpu pool runs each job alone (one job per inference: the edge has
 *     already gathered its requests, and a CPU gains little from larger runs while one more
 *     job waits behind each).
 * A job is never split: one that holds more rows than the worker's limit runs alone.
 */
import type { PoolName } from '../config/settings.ts';
import { MODEL_DEFAULTS, type BatchingSpec, type TensorSpec } from '../models/config.ts';
import type { EdgeLimits } from './edge-batcher.ts';

/**
 * Most rows in one edge batch (one job from this process). 16 rows already spread a job's
 * queue, Redis and worker costs to a few percent of each request's own; the worker batches
 * again across jobs up to the model's own limit. Measured with mlp-bench at 2,000 rows/s
 * offered on 2 cores (maxBatchSize 64 and 128): median latency 23-40 ms uncapped, 13 ms
 * capped, when the API still answered a job's requests one by one.
 */
export const EDGE_MAX_ROWS = 16;
/** Longest a request waits at the edge for company; the worker may wait again for its batch. */
export const EDGE_MAX_DELAY_MS = 2;

export interface BatchingPlan {
  /** The API's edge batcher: how many rows of concurrent requests one job may gather. */
  edge: EdgeLimits;
  /**
   * The worker's batcher: how jobs merge into one inference. `maxBatchSize` 1 means each job
   * runs alone (whatever rows it carries).
   */
  worker: BatchingSpec;
}

/** What the decision reads of a model: its batching settings and its inputs' shapes (a fixed batch dimension cannot batch). */
export interface BatchingSubject {
  batching: BatchingSpec;
  inputs?: readonly Pick<TensorSpec, 'shape'>[];
}

/** The worker's batching for a model it does not know (yet): one job per inference. */
const ALONE: BatchingSpec = { ...MODEL_DEFAULTS.batching, maxBatchSize: 1, maxDelayMs: 0 };

/**
 * How `model` batches in `pool`, at the edge and in the worker. `model` undefined: a model the
 * caller does not know, which does not batch.
 */
export function batchingPlan(pool: PoolName, model: BatchingSubject | undefined): BatchingPlan {
  const b = model?.batching ?? ALONE;
  const dynamic = (model?.inputs ?? []).every((i) => i.shape[0] === -1);
  const edge: EdgeLimits =
    !dynamic || b.maxBatchSize <= 1
      ? { maxRows: 1, maxDelayMs: 0 }
      : { maxRows: Math.min(EDGE_MAX_ROWS, b.maxBatchSize), maxDelayMs: Math.min(EDGE_MAX_DELAY_MS, b.maxDelayMs) };
  const worker: BatchingSpec = pool === 'gpu' ? { ...b } : { ...b, policy: 'fixed', maxBatchSize: 1, maxDelayMs: 0 };
  return { edge, worker };
}

/** A model's batching as its config.yaml may leave it (or a ModelServer states it), with the defaults filled in. */
export function withBatchingDefaults(b: Partial<BatchingSpec> | undefined): BatchingSpec {
  return { ...MODEL_DEFAULTS.batching, ...b };
}
