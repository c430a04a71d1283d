/** The records a prediction leaves: its job, its result, and its status record in Redis. */
import type { SerializedError } from './errors.ts';
import type { WireInput } from './input.ts';
import type { PoolName } from './config.ts';
import type { RowPrediction, TensorValue } from './runtime/postprocess.ts';

export type PredictionStatus = 'QUEUED' | 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';

export interface Timings {
  /** From enqueue until a worker started it. */
  queueMs: number;
  /** The model run (preprocessing included), shared by every request of its batch. */
  inferenceMs: number;
  /** From the request's arrival until its answer. */
  totalMs: number;
}

export interface PredictionResult {
  id: string;
  model: string;
  version: string;
  /** One per input row. */
  predictions: RowPrediction[];
  outputs: TensorValue[];
  timings: Timings;
  cached: boolean;
  /** Rows in the inference that produced this result. */
  batchRows: number;
}

export interface PredictionRecord {
  id: string;
  status: PredictionStatus;
  model: string;
  version: string;
  pool: PoolName;
  rows: number;
  requestId?: string;
  submittedAt: number;
  finishedAt?: number;
  result?: PredictionResult;
  error?: SerializedError;
}

/** What a worker receives in a BullMQ job. */
export interface PredictionJobData {
  id: string;
  requestId: string;
  model: string;
  version: string;
  pool: PoolName;
  input: WireInput;
  rows: number;
  enqueuedAt: number;
  /** Epoch ms after which the work is worthless and is dropped, not run. */
  deadline?: number;
  /** Channel of the API process waiting synchronously, if any. */
  replyTo?: string;
}

export function isFinal(status: PredictionStatus): boolean {
  return status === 'COMPLETED' || status === 'FAILED' || status === 'CANCELLED';
}
