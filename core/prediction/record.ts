/** The records a prediction leaves: its job, its result, and its status record in Redis. */
import { randomUUID } from 'node:crypto';
import type { SerializedError } from '../errors/registry.ts';
import type { WireInput } from './input.ts';
import type { PoolName } from '../config/settings.ts';
import type { EncodedTensor } from '../tensor/codec.ts';
import type { JobTrace, TraceCarrier } from '../telemetry/trace.ts';

export type PredictionStatus = 'QUEUED' | 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';

/** Where an answer's time went (each request's own, besides what its batch shares). */
export interface Timings {
  /** From enqueue until a worker started it. */
  queueMs: number;
  /**
   * Waiting to be batched: at the API's edge batcher (synchronous requests) and in the
   * worker's batcher, until the batch's inference started. Absent in records written before it.
   */
  batchWaitMs?: number;
  /** Rows in the inference that answered it. Absent in records written before it. */
  batchRows?: number;
  /** Waiting for the model to load into the worker (0 when it was loaded). Absent in records written before it. */
  coldStartMs?: number;
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
  /** The submission's trace context, which each delivery of the result links to. */
  trace?: TraceCarrier;
  submittedAt: number;
  /** The job that carries it, when that is not its own id (a coalesced submission: core/api/tickets.ts). */
  job?: string;
  finishedAt?: number;
  result?: PredictionResult;
  error?: SerializedError;
}

/**
 * One submission of a coalesced asynchronous job: its own prediction (id, record, deadline).
 * The first part's id is the job's; the others share its first 8 characters, so on a cluster
 * every record of the job is in one slot (core/redis/connection.ts).
 */
export interface JobPart {
  id: string;
  requestId: string;
  rows: number;
  /** Epoch ms after which this part is answered DEADLINE_EXCEEDED and not run. */
  deadline?: number;
  submittedAt: number;
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
  /**
   * An asynchronous job's predictions, one per segment, in order (absent in jobs written
   * before coalescing: one prediction, the job's id). The worker reads their records when it
   * takes the job, runs only the parts not answered yet, and finishes them together.
   */
  parts?: JobPart[];
  /** Trace contexts when tracing is on: the job's own, and one per segment (core/telemetry/trace.ts). */
  trace?: JobTrace;
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
  /** The job's wait in the worker's batcher. */
  batchWaitMs?: number;
  coldStartMs?: number;
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
    ...(job.trace?.parts?.[0] ? { trace: job.trace.parts[0] } : {}),
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

/** The predictions of an asynchronous job, whether it names them (`parts`) or is one (older jobs). */
export function jobParts(job: PredictionJobData): JobPart[] {
  return job.parts ?? [{ id: job.id, requestId: job.requestId, rows: job.rows, deadline: job.deadline, submittedAt: job.enqueuedAt }];
}

/** The record of part `part` of `job`, accepted and not answered yet. */
export function partAccepted(
  job: Pick<PredictionJobData, 'id' | 'model' | 'version' | 'pool'>,
  part: JobPart,
  trace?: TraceCarrier,
): PredictionRecord {
  return {
    id: part.id,
    status: 'QUEUED',
    model: job.model,
    version: job.version,
    pool: job.pool,
    rows: part.rows,
    requestId: part.requestId,
    ...(trace ? { trace } : {}),
    submittedAt: part.submittedAt,
    ...(part.id === job.id ? {} : { job: job.id }),
  };
}

/**
 * `n` fresh prediction ids for one job: the first is the job's id (`first` when given: a placed
 * one, see placedId), the rest share its first 8 characters (its hash tag).
 */
export function partIds(n: number, first: string = randomUUID()): string[] {
  return Array.from({ length: n }, (_, i) => (i === 0 ? first : first.slice(0, 8) + randomUUID().slice(8)));
}

/** The key of a model version in maps, metrics, batches and worker announcements. */
export function modelKey(name: string, version: string): string {
  return `${name}@${version}`;
}

/**
 * The shard of a pool that holds job `id`: a hash of the id, so API replicas agree without
 * asking Redis, and a cancel or a poll finds the job again. One shard: always 0.
 */
export function shardOf(id: string, shards: number): number {
  if (shards <= 1) return 0;
  // FNV-1a over the id: uuids are already random, but any id spreads evenly this way.
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return (h >>> 0) % shards;
}

/**
 * A fresh id for a job of model version `key` that hashes to the version's lane (its shard
 * under `queue.placement: model`), so every lookup by id (cancel, poll) still finds the shard
 * from the id alone. About `lanes` draws of a uuid.
 */
export function placedId(key: string, lanes: number): string {
  const lane = shardOf(key, lanes);
  for (;;) {
    const id = randomUUID();
    if (shardOf(id, lanes) === lane) return id;
  }
}

/** A new job's id: under `queue.placement: model` (`lanes` above 1) one in the version's lane (placedId), else a random one. */
export function jobId(mv: { name: string; version: string }, lanes: number): string {
  return lanes > 1 ? placedId(modelKey(mv.name, mv.version), lanes) : randomUUID();
}

/**
 * A new job for `rows` rows of a model version's normalized input, with a fresh id; with
 * `lanes` above 1 (`queue.placement: model`), an id in the version's lane.
 */
export function newJob(
  mv: { name: string; version: string; config: { pool: PoolName } },
  input: WireInput,
  rows: number,
  requestId: string,
  timeoutMs?: number,
  lanes = 1,
): PredictionJobData {
  const now = Date.now();
  return {
    id: jobId(mv, lanes),
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
