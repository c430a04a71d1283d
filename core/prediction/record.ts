/** The records a prediction leaves: its job, its result, and its status record in Redis. */
import { randomUUID } from 'node:crypto';
import type { SerializedError } from '../errors/registry.ts';
import type { WireInput } from './input.ts';
import type { PoolName } from '../config/settings.ts';
import type { EncodedTensor } from '../tensor/codec.ts';

export type PredictionStatus = 'QUEUED' | 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';

export interface Timings {
  /** From enqueue until a worker started it. */
  queueMs: number;
  /** The model run (preprocessing included), shared by every request of its batch. */
  inferenceMs: number;
  /** From the request's arrival until its answer. */
  totalMs: number;
}

export interface ClassProbability {
  label: string;
  probability: number;
}

export interface RowPrediction {
  label: string | null;
  score: number | null;
  probabilities: ClassProbability[] | null;
}

export interface PredictionResult {
  id: string;
  model: string;
  version: string;
  /** One per input row. */
  predictions: RowPrediction[];
  /** The output tensors of this request's rows, as bytes (base64 of little-endian values). */
  outputs: EncodedTensor[];
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
  /**
   * Rows of each request the API gathered into this job (its edge batch), in order: the
   * worker answers each its own rows and predictions. Absent: one request, all the rows.
   */
  segments?: number[];
  /** Request ids of the segments, for the worker's logs. */
  requestIds?: string[];
}

/** One request's share of a synchronous job's answer. */
export interface ReplyPart {
  predictions: RowPrediction[];
  outputs: EncodedTensor[];
  /** This request alone failed (its output was not finite); the others of the job stand. */
  error?: SerializedError;
}

/**
 * What a worker publishes to the API process waiting on a synchronous job. Nothing is
 * stored for it: only that process can use it, and it holds the request's deadline itself.
 */
export interface SyncReply {
  id: string;
  status: 'COMPLETED' | 'FAILED';
  /** The whole job failed: every request of it gets this. */
  error?: SerializedError;
  /** One per segment, in the job's order. */
  parts?: ReplyPart[];
  queueMs: number;
  inferenceMs: number;
  batchRows: number;
}

export function isFinal(status: PredictionStatus): boolean {
  return status === 'COMPLETED' || status === 'FAILED' || status === 'CANCELLED';
}

/** The record of accepted work that no worker has answered yet. */
export function accepted(job: PredictionJobData): PredictionRecord {
  return {
    id: job.id,
    status: 'QUEUED',
    model: job.model,
    version: job.version,
    pool: job.pool,
    rows: job.rows,
    requestId: job.requestId,
    submittedAt: job.enqueuedAt,
  };
}

/** The final record of a job answered with `result`. */
export function completed(job: PredictionJobData, result: PredictionResult, finishedAt = Date.now()): PredictionRecord {
  return { ...accepted(job), status: 'COMPLETED', finishedAt, result };
}

/** The final record of a job that failed (or was dropped at its deadline) with `error`. */
export function failed(
  job: PredictionJobData,
  error: { toJSON(): SerializedError } | SerializedError,
  finishedAt = Date.now(),
): PredictionRecord {
  return { ...accepted(job), status: 'FAILED', finishedAt, error: 'toJSON' in error ? error.toJSON() : error };
}

/** The final record of queued work taken back by request `requestId`. */
export function cancelled(record: PredictionRecord, requestId: string, finishedAt = Date.now()): PredictionRecord {
  return { ...record, status: 'CANCELLED', finishedAt, error: { code: 'CANCELLED', message: `cancelled by request ${requestId}` } };
}

/** The final record of accepted work whose job Redis lost (core/prediction/lost-work.ts). */
export function lost(record: PredictionRecord, error: SerializedError, finishedAt = Date.now()): PredictionRecord {
  return { ...record, status: 'FAILED', finishedAt, error };
}

/** The key of a model version in maps, metrics, batches and worker announcements. */
export function modelKey(name: string, version: string): string {
  return `${name}@${version}`;
}

/** A new job for `rows` rows of a model version's normalized input, with a fresh id. */
export function newJob(
  mv: { name: string; version: string; config: { pool: PoolName } },
  input: WireInput,
  rows: number,
  requestId: string,
  timeoutMs?: number,
): PredictionJobData {
  const now = Date.now();
  return {
    id: randomUUID(),
    requestId,
    model: mv.name,
    version: mv.version,
    pool: mv.config.pool,
    input,
    rows,
    enqueuedAt: now,
    ...(timeoutMs !== undefined ? { deadline: now + timeoutMs } : {}),
  };
}
