/**
 * The API process's view of serving: validate, cache, enqueue, wait or hand out a ticket,
 * read results. Resolvers are thin adapters over this class; it knows no GraphQL or HTTP.
 */
import { randomUUID } from 'node:crypto';
import { ServingError, asServingError } from '../errors.ts';
import type { BatchlineConfig } from '../config.ts';
import { normalizeInput, toWire, type PredictionInput, type NormalizedInput } from '../prediction/input.ts';
import { scanConfigured, type ModelRepository, type ModelVersion } from '../model-repository.ts';
import { DriftCounter, readDriftReport, type DriftReport } from '../drift.ts';
import { EdgeBatcher, type EdgeBatch, type EdgeJob, type EdgeLimits } from './edge-batcher.ts';
import type { Keyspace, RedisClient } from '../redis.ts';
import type { PredictionQueues } from '../prediction/queues.ts';
import { SYNC_PRIORITY, bullPriority } from '../prediction/queues.ts';
import type { ResultStore } from '../prediction/result-store.ts';
import type { ResultFeed } from '../prediction/result-feed.ts';
import type { LostWork } from '../prediction/lost-work.ts';
import { PredictionCache, cacheKey } from './prediction-cache.ts';
import type { Metrics } from '../metrics.ts';
import type { Logger } from '../logger.ts';
import type { WorkerRegistry } from '../prediction/worker-registry.ts';
import {
  accepted,
  cancelled,
  completed,
  failed,
  modelKey,
  type PredictionRecord,
  type PredictionResult,
  type PredictionJobData,
} from '../prediction/record.ts';

export interface PredictRequest {
  model: string;
  version?: string | null;
  input: PredictionInput;
  requestId: string;
  /** Deadline for this request; capped by the server's `predict.timeoutMs`. */
  timeoutMs?: number | null;
}

export interface SubmitRequest extends PredictRequest {
  /** 1-10, 10 most urgent. @defaultValue 5 */
  priority?: number | null;
}

export interface Ticket {
  id: string;
  status: PredictionRecord['status'];
  model: string;
  version: string;
  submittedAt: number;
}

export interface ModelInfo extends ModelVersion {
  /** Live workers serving this version. */
  workers: number;
  ready: boolean;
  /** Current batch row limit reported by a worker (adaptive policies move it). */
  batchLimit?: number;
}

export interface PredictionServiceDeps {
  config: BatchlineConfig;
  repository: ModelRepository;
  queues: PredictionQueues;
  store: ResultStore;
  feed: ResultFeed;
  workers: WorkerRegistry;
  redis: RedisClient;
  keys: Keyspace;
  /** Ends records whose job Redis lost, when a poll finds one (core/prediction/lost-work.ts). */
  lostWork?: LostWork;
  metrics: Metrics;
  logger: Logger;
}

/**
 * Most rows in one edge batch (one job from this process). 16 rows already spread a job's
 * queue, Redis and worker costs to a few percent of each request's own; the worker batches
 * again across jobs up to the model's own limit. Measured with mlp-bench at 2,000 rows/s
 * offered on 2 cores (maxBatchSize 64 and 128): median latency 23-40 ms uncapped, 13 ms
 * capped, when the API still answered a job's requests one by one.
 */
const EDGE_MAX_ROWS = 16;
/** Longest a request waits at the edge for company; the worker may wait again for its batch. */
const EDGE_MAX_DELAY_MS = 2;

/** How a model batches at the edge: not at all when a batch dimension is fixed or its maxBatchSize is 1. */
export function edgeLimits(mv: ModelVersion): EdgeLimits {
  const b = mv.config.batching;
  const dynamic = mv.config.inputs.every((i) => i.shape[0] === -1);
  if (!dynamic || b.maxBatchSize <= 1) return { maxRows: 1, maxDelayMs: 0 };
  return { maxRows: Math.min(EDGE_MAX_ROWS, b.maxBatchSize), maxDelayMs: Math.min(EDGE_MAX_DELAY_MS, b.maxDelayMs) };
}

export class PredictionService {
  private readonly deps: PredictionServiceDeps;
  private readonly cache: PredictionCache;
  /** Cache hits never reach a worker, so the drift monitor's counts of them are kept here. */
  private readonly driftCounts: DriftCounter;
  private readonly edge: EdgeBatcher;
  /** The model version behind each model key sent to the edge batcher, for its jobs. */
  private readonly groups = new Map<string, ModelVersion>();
  repository: ModelRepository;

  constructor(deps: PredictionServiceDeps) {
    this.deps = deps;
    this.repository = deps.repository;
    this.cache = new PredictionCache(deps.config.cache);
    this.edge = new EdgeBatcher({
      dispatch: (batch) => this.dispatch(batch),
      onSend: (batch) => {
        deps.metrics.edgeBatchRows.observe(
          { model: this.groups.get(batch.modelKey)?.name ?? batch.modelKey, reason: batch.reason },
          batch.rows,
        );
      },
    });
    this.driftCounts = new DriftCounter(deps.redis, deps.keys, (deps.config.maintenance.driftWindowMinutes + 5) * 60);
  }

  /** Flushes what is buffered (drift counts). */
  async close(): Promise<void> {
    await this.driftCounts.close();
  }

  private countHit(mv: ModelVersion, result: PredictionResult): void {
    if (mv.config.task === 'classification')
      this.driftCounts.add(
        `${mv.name}@${mv.version}`,
        result.predictions.map((p) => p.label),
      );
  }

  /** Every model version in the repository, with its live worker count. */
  async models(): Promise<ModelInfo[]> {
    const alive = await this.deps.workers.alive().catch(() => []);
    return this.repository.versions.map((v) => {
      const key = `${v.name}@${v.version}`;
      const serving = alive.filter((w) => w.models.includes(key));
      const batchLimit = serving.map((w) => w.batching?.[key]?.limit).find((l) => l !== undefined);
      return { ...v, workers: serving.length, ready: v.status === 'READY' && serving.length > 0, batchLimit };
    });
  }

  /** Resolves a model and version, or throws the 404 / 503 that fits. */
  resolve(model: string, version?: string | null): ModelVersion {
    if (!this.repository.has(model)) throw new ServingError('MODEL_NOT_FOUND', `no model named '${model}'`);
    const mv = this.repository.find(model, version);
    if (!mv) throw new ServingError('MODEL_VERSION_NOT_FOUND', `model '${model}' has no version '${version}'`);
    if (mv.status !== 'READY')
      throw new ServingError('MODEL_NOT_READY', `model '${model}' version ${mv.version} failed to load: ${mv.error}`);
    return mv;
  }

  private timeout(requested?: number | null): number {
    const max = this.deps.config.predict.timeoutMs;
    if (requested == null) return max;
    if (!Number.isInteger(requested) || requested <= 0)
      throw new ServingError('BAD_USER_INPUT', `timeoutMs: expected a positive integer, got ${requested}`, { field: 'timeoutMs' });
    return Math.min(requested, max);
  }

  /** Synchronous prediction: the answer, or an error with its code. */
  async predict(req: PredictRequest): Promise<PredictionResult> {
    const started = performance.now();
    let modelName = req.model;
    try {
      const mv = this.resolve(req.model, req.version);
      modelName = mv.name;
      const { input, rows } = normalizeInput(req.input, mv.config, this.deps.config.predict.maxRows);
      const timeoutMs = this.timeout(req.timeoutMs);
      let result: PredictionResult;
      let cached = false;
      if (mv.config.cache.enabled) {
        const key = cacheKey(mv.name, mv.version, input);
        // A hit is answered without a promise in between: it is the API's floor.
        const hit = this.cache.peek(key);
        if (hit) ({ result, cached } = { result: hit, cached: true });
        else
          ({ result, cached } = await this.cache.getOrCompute(
            key,
            () => this.compute(mv, input, rows, req, timeoutMs),
            mv.config.cache.ttlMs,
          ));
        (cached ? this.deps.metrics.cacheHits : this.deps.metrics.cacheMisses).inc({ model: mv.name });
        if (cached) this.countHit(mv, result);
      } else {
        result = await this.compute(mv, input, rows, req, timeoutMs);
      }
      const totalMs = performance.now() - started;
      this.deps.metrics.latency.observe({ model: mv.name, phase: 'total' }, totalMs / 1000);
      this.deps.metrics.requests.inc({ model: mv.name, operation: 'predict', outcome: 'ok' });
      return cached
        ? { ...result, cached: true, timings: { queueMs: 0, inferenceMs: 0, totalMs } }
        : { ...result, timings: { ...result.timings, totalMs } };
    } catch (e) {
      const err = asServingError(e);
      this.deps.metrics.requests.inc({
        model: this.repository.has(modelName) ? modelName : '(unknown)',
        operation: 'predict',
        outcome: err.code,
      });
      throw err;
    }
  }

  private jobData(
    mv: ModelVersion,
    input: NormalizedInput,
    rows: number,
    requestId: string,
    timeoutMs: number | undefined,
  ): PredictionJobData {
    const now = Date.now();
    return {
      id: randomUUID(),
      requestId,
      model: mv.name,
      version: mv.version,
      pool: mv.config.pool,
      input: toWire(input),
      rows,
      enqueuedAt: now,
      ...(timeoutMs !== undefined ? { deadline: now + timeoutMs } : {}),
    };
  }

  /**
   * A synchronous prediction's inference: through the edge batcher (see core/api/edge-batcher.ts),
   * which sends concurrent requests of one model as one job. A model batches at the edge when
   * every input's batch dimension is dynamic and its `maxBatchSize` is over 1; else each
   * request is its own job.
   */
  private async compute(
    mv: ModelVersion,
    input: NormalizedInput,
    rows: number,
    req: PredictRequest,
    timeoutMs: number,
  ): Promise<PredictionResult> {
    const key = modelKey(mv.name, mv.version);
    // Nobody would take the job: say so now rather than with a 504 at the deadline.
    if (!(await this.deps.workers.serves(key))) {
      throw new ServingError(
        'SERVICE_UNAVAILABLE',
        `no live worker serves ${mv.name} version ${mv.version} (the ${mv.config.pool} pool) right now; try again later`,
        { retryAfterSeconds: 1 },
      );
    }
    const started = performance.now();
    this.groups.set(key, mv);
    const answer = await this.edge.submit(key, edgeLimits(mv), input, rows, timeoutMs, req.requestId);
    return {
      id: randomUUID(),
      model: mv.name,
      version: mv.version,
      predictions: answer.part.predictions,
      outputs: answer.part.outputs,
      timings: { queueMs: answer.queueMs, inferenceMs: answer.inferenceMs, totalMs: performance.now() - started },
      cached: false,
      batchRows: answer.batchRows,
    };
  }

  /** One edge batch as one synchronous job; no record is stored for it (nobody could read it). */
  private dispatch(batch: EdgeBatch): EdgeJob {
    const mv = this.groups.get(batch.modelKey)!;
    const job: PredictionJobData = {
      ...this.jobData(mv, batch.input, batch.rows, batch.requestIds[0], undefined),
      deadline: batch.deadline,
      replyTo: this.deps.feed.replyChannel,
      segments: batch.segments,
      requestIds: batch.requestIds,
    };
    // Wait first, enqueue second: the reply may come before `enqueue` returns.
    const wait = this.deps.feed.expect(job.id);
    const reply = this.deps.queues
      .enqueue(job, {
        priority: SYNC_PRIORITY,
        attempts: mv.config.retry.attempts,
        backoffMs: mv.config.retry.backoffMs,
        keepSeconds: this.deps.config.results.ttlSeconds,
      })
      .then(
        () => wait.promise,
        (e: unknown) => {
          wait.cancel();
          throw asServingError(e);
        },
      );
    return {
      reply,
      abandon: () => {
        wait.cancel(new ServingError('DEADLINE_EXCEEDED'));
        // Not started yet: take it back so no worker spends time on an answer nobody reads.
        void this.deps.queues.removeIfWaiting(mv.config.pool, job.id);
      },
    };
  }

  /** Asynchronous prediction: a ticket at once; the result comes by subscription or polling. */
  async submit(req: SubmitRequest): Promise<Ticket> {
    let modelName = req.model;
    try {
      const mv = this.resolve(req.model, req.version);
      modelName = mv.name;
      const { input, rows } = normalizeInput(req.input, mv.config, this.deps.config.predict.maxRows);
      const priority = bullPriority(req.priority);
      const timeoutMs = req.timeoutMs == null ? undefined : this.timeout(req.timeoutMs);
      const job = this.jobData(mv, input, rows, req.requestId, timeoutMs);
      const hit = mv.config.cache.enabled ? this.cache.peek(cacheKey(mv.name, mv.version, input)) : undefined;
      if (hit) {
        this.deps.metrics.cacheHits.inc({ model: mv.name });
        this.countHit(mv, hit);
        const result: PredictionResult = { ...hit, id: job.id, cached: true, timings: { queueMs: 0, inferenceMs: 0, totalMs: 0 } };
        await this.deps.store.finish(completed(job, result));
        this.deps.metrics.requests.inc({ model: mv.name, operation: 'submit', outcome: 'ok' });
        return { id: job.id, status: 'COMPLETED', model: mv.name, version: mv.version, submittedAt: job.enqueuedAt };
      }
      await this.deps.store.accept(accepted(job));
      try {
        // On a cluster the ticket is given once replicas hold the job and the record (core/redis-cluster.ts).
        await Promise.all([
          this.deps.queues.enqueue(job, {
            priority,
            attempts: mv.config.retry.attempts,
            backoffMs: mv.config.retry.backoffMs,
            keepSeconds: this.deps.config.results.ttlSeconds,
            replicated: true,
          }),
          this.deps.store.replicated(this.deps.keys.prediction(job.id)),
        ]);
      } catch (e) {
        const err = asServingError(e);
        // Refused work must not look accepted to a poller.
        await this.deps.store.finish(failed(job, err)).catch(() => {});
        throw err;
      }
      this.deps.metrics.requests.inc({ model: mv.name, operation: 'submit', outcome: 'ok' });
      return { id: job.id, status: 'QUEUED', model: mv.name, version: mv.version, submittedAt: job.enqueuedAt };
    } catch (e) {
      const err = asServingError(e);
      this.deps.metrics.requests.inc({
        model: this.repository.has(modelName) ? modelName : '(unknown)',
        operation: 'submit',
        outcome: err.code,
      });
      throw err;
    }
  }

  /** The record of a prediction; RUNNING when its job is active. */
  async get(id: string): Promise<PredictionRecord> {
    let rec: PredictionRecord | undefined;
    try {
      rec = await this.deps.store.get(id);
    } catch (e) {
      throw asServingError(e);
    }
    if (!rec) throw new ServingError('PREDICTION_NOT_FOUND', `no prediction with id '${id}' (unknown or expired)`);
    if (rec.status === 'QUEUED') {
      // null: not known (Redis trouble), unlike undefined: no such job.
      const job = await this.deps.queues.getJob(rec.pool, id).catch(() => null);
      if (job && (await job.getState().catch(() => '')) === 'active') rec.status = 'RUNNING';
      else if (job === undefined && this.deps.lostWork?.due(rec))
        rec = (await this.deps.lostWork.settle(rec).catch(() => undefined)) ?? rec;
    }
    return rec;
  }

  /**
   * Cancels work that has not started: its job is removed and its subscribers get a
   * CANCELLED event. Already cancelled work answers as is; started or finished work is
   * NOT_CANCELLABLE.
   */
  async cancel(id: string, requestId: string): Promise<PredictionRecord> {
    const rec = await this.get(id);
    if (rec.status === 'CANCELLED') return rec;
    if (rec.status !== 'QUEUED' || !(await this.deps.queues.removeIfWaiting(rec.pool, id))) {
      throw new ServingError(
        'NOT_CANCELLABLE',
        `prediction '${id}' is ${rec.status === 'QUEUED' ? 'RUNNING' : rec.status}; only queued work can be cancelled`,
      );
    }
    const done = cancelled(rec, requestId);
    try {
      await this.deps.store.finish(done);
    } catch (e) {
      throw asServingError(e);
    }
    this.deps.metrics.requests.inc({ model: rec.model, operation: 'cancel', outcome: 'ok' });
    return done;
  }

  /** The final record of `id`, once, as an async iterator (see ResultFeed.watch). */
  async watch(id: string): Promise<AsyncIterableIterator<PredictionRecord>> {
    try {
      return await this.deps.feed.watch(id);
    } catch (e) {
      throw asServingError(e);
    }
  }

  /** Redis reachable and at least one model loaded. */
  async ready(): Promise<boolean> {
    if (this.repository.ready().length === 0) return false;
    try {
      return (await this.deps.redis.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  /** Rescans the model repository (a new version was dropped in); returns the new view. */
  async reloadRepository(): Promise<ModelRepository> {
    const { config, logger } = this.deps;
    this.repository = await scanConfigured(config, logger);
    logger.info({ models: this.repository.ready().map((v) => `${v.name}@${v.version}`) }, 'model repository rescanned');
    return this.repository;
  }

  purgeCache(): number {
    return this.cache.purgeStale();
  }

  /** The latest drift report of a model version (the newest ready one by default). */
  async drift(model: string, version?: string | null): Promise<DriftReport | undefined> {
    const mv = this.resolve(model, version);
    try {
      return await readDriftReport(this.deps.redis, this.deps.keys, `${mv.name}@${mv.version}`);
    } catch (e) {
      throw asServingError(e);
    }
  }

  /** Drift gauges from the stored reports, for the metrics endpoint. */
  async collectDrift(): Promise<void> {
    for (const v of this.repository.ready()) {
      const r = await readDriftReport(this.deps.redis, this.deps.keys, `${v.name}@${v.version}`);
      if (!r || r.status === 'INSUFFICIENT_DATA') continue;
      this.deps.metrics.driftPValue.set({ model: v.name, version: v.version }, r.pValue);
      this.deps.metrics.driftStatistic.set({ model: v.name, version: v.version }, r.statistic);
    }
  }

  /** Queue depths for the metrics endpoint. */
  async collectQueueDepth(): Promise<void> {
    for (const pool of ['cpu', 'gpu'] as const) {
      const counts = await this.deps.queues.counts(pool);
      for (const [state, n] of Object.entries(counts)) this.deps.metrics.queueJobs.set({ pool, state }, n);
      this.deps.metrics.queueDepth.set({ pool }, (counts.wait ?? 0) + (counts.prioritized ?? 0));
    }
  }
}
