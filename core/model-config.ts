/**
 * The per-model configuration file: `<repository>/<model>/config.yaml`, optionally
 * overridden per version by `<repository>/<model>/<version>/config.yaml`.
 *
 * It is checked against the ONNX session's own metadata when the model loads; a model
 * whose config and graph disagree is skipped with the reason, never served.
 */
import type { CharNgramOptions } from './preprocess/char-ngrams.ts';

/** Tensor element types, named as in the Open Inference Protocol. */
export type Datatype = 'FP32' | 'FP64' | 'INT32' | 'INT64' | 'BOOL' | 'UINT8' | 'INT8';

export interface TensorSpec {
  name: string;
  datatype: Datatype;
  /** Dimensions; -1 marks a dynamic one. The first is the batch dimension and must be -1. */
  shape: number[];
}

export type PreprocessingSpec = CharNgramOptions;

/** How a batch is formed (the GPU pool batches; the CPU pool runs one request at a time). */
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
}
