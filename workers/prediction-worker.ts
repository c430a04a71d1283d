/**
 * A worker process of one pool: BullMQ jobs in, batched inference on inference threads,
 * results written to the ResultStore and published. The event loop here only moves jobs
 * and bytes; inference runs on threads, so lock renewals are never starved.
 */
import { randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { BatchlineConfig, PoolName } from '../core/config.ts';
import { ServingError, fromSerialized } from '../core/errors.ts';
import { scanConfigured, type ModelRepository, type ModelVersion } from '../core/model-repository.ts';
import { InferencePool } from '../core/runtime/inference-pool.ts';
import { encodeRows, nonFiniteOutput, rowPredictions, type TensorValue } from '../core/runtime/postprocess.ts';
import { Batcher } from '../core/batching/batcher.ts';
import type { BatchingSpec, ModelConfig } from '../core/model-config.ts';
import { fromWire } from '../core/prediction/input.ts';
import { ResultStore } from '../core/prediction/result-store.ts';
import { createRedis, keysOf, whenReady, whileUnreachable, type RedisClient } from '../core/redis.ts';
import { Deadline, RELEASE_MS } from '../core/shutdown.ts';
import { WorkerRegistry } from '../core/prediction/worker-registry.ts';
import { createMetrics, type Metrics } from '../core/metrics.ts';
import { readCgroupLimits } from '../core/worker/cgroup.ts';
import { planPool } from '../core/worker/sizing.ts';
import { DriftCounter } from '../core/drift.ts';
import { StatsRecorder } from '../core/live-stats.ts';
import type { ControlMessage } from '../core/maintenance.ts';
import type { Logger } from '../core/logger.ts';
import {
  completed,
  failed,
  type PredictionJobData,
  type PredictionResult,
  type ReplyPart,
  type SyncReply,
} from '../core/prediction/record.ts';

export interface WorkerOptions {
  config: BatchlineConfig;
  pool: PoolName;
  logger: Logger;
}

const HEARTBEAT_MS = 5_000;

/**
 * A model's resident memory estimated from its file: weights load about twice over
 * (file buffer and session), plus the session's own overhead. `batchline model measure`
 * gives the real figure for the Kubernetes resource.
 */
function estimatedModelBytes(v: ModelVersion): number {
  return 2 * v.sizeBytes + 16 * 1024 * 1024;
}

/**
 * Threads, intra-op threads and job concurrency of this worker: what the configuration
 * sets, the rest from `planPool` over the container's cgroup limits (core/worker/sizing.ts).
 */
export function workerShape(
  config: BatchlineConfig,
  models: ModelVersion[],
  maxBatch: number,
  cgroupRoot?: string,
): { threads: number; intraOpThreads: number; concurrency: number; explanation: string[] } {
  const limits = readCgroupLimits(cgroupRoot);
  const plan = planPool({
    // Sized as a CPU pool: on CUDA the GPU bound is the device's, which the operator sets.
    pool: 'cpu',
    memoryLimitBytes: limits.memoryBytes,
    cpuLimitCores: limits.cpuCores,
    hostCores: availableParallelism(),
    modelBytes: models.length ? models.map(estimatedModelBytes) : 1,
    batchSize: maxBatch,
  });
  const threads = config.workers.threads || plan.slots;
  const intraOpThreads = config.workers.intraOpThreads || Math.max(1, Math.floor(plan.cores / threads));
  // Jobs in hand: a full batch per thread plus one gathering (batch 1: two per thread, so
  // the next job is fetched while one runs).
  const concurrency = config.workers.concurrency || threads * Math.max(2, maxBatch) + (maxBatch > 1 ? maxBatch : 0);
  return { threads, intraOpThreads, concurrency, explanation: plan.explanation };
}

export class PredictionWorker {
  readonly id = randomUUID();
  readonly metrics: Metrics;
  private readonly options: WorkerOptions;
  private readonly log: Logger;
  private repository!: ModelRepository;
  private models = new Map<string, ModelVersion>();
  private inference!: InferencePool;
  private batcher!: Batcher;
  /** One BullMQ worker per shard of the pool's queue (`queue.shards`), all feeding the one batcher. */
  private bulls: Worker<PredictionJobData>[] = [];
  private redis!: RedisClient;
  private store!: ResultStore;
  private registry!: WorkerRegistry;
  private heartbeat?: NodeJS.Timeout;
  private executionProvider: 'cpu' | 'cuda' = 'cpu';
  private control?: RedisClient;
  private drift?: DriftCounter;
  /** This worker's share of the operations view's live figures. */
  private stats?: StatsRecorder;
  private reloading: Promise<void> = Promise.resolve();
  private stopping = false;
  private readonly inHand = new Set<string>();
  private bullConnection?: RedisClient;

  constructor(options: WorkerOptions) {
    this.options = options;
    this.log = options.logger.child({ pool: options.pool, workerId: this.id });
    this.metrics = createMetrics('worker');
  }

  /** Keys (`name@version`) of the models this worker serves. */
  get loaded(): string[] {
    return [...this.models.keys()];
  }

  async start(): Promise<void> {
    const { config, pool } = this.options;
    this.repository = await scanConfigured(config, this.log);
    const mine = this.repository.ready().filter((v) => v.config.pool === pool);
    const maxBatch = Math.max(1, ...mine.map((v) => (pool === 'gpu' ? v.config.batching.maxBatchSize : 1)));
    const { explanation, ...shape } = workerShape(config, mine, maxBatch);
    this.log.info({ sizing: explanation }, 'worker sizing');
    this.executionProvider = await chooseExecutionProvider(config.workers.executionProvider, pool, this.log);
    this.inference = await InferencePool.start({
      models: mine.map((v) => ({ key: `${v.name}@${v.version}`, path: v.path, config: v.config })),
      threads: shape.threads,
      intraOpThreads: shape.intraOpThreads,
      executionProvider: this.executionProvider,
    });
    for (const f of this.inference.failed)
      this.log.error({ model: f.key, reason: f.error }, 'model failed to load in the inference thread; skipped');
    for (const v of mine) if (this.inference.loaded.includes(`${v.name}@${v.version}`)) this.models.set(`${v.name}@${v.version}`, v);

    this.batcher = new Batcher({
      run: (key, input) => this.inference.run(key, input),
      spec: (key) => this.batchingSpec(key),
      slots: shape.threads,
      onBatch: (e) => {
        this.metrics.batchRows.observe({ model: e.model }, e.rows);
        this.metrics.batchLatency.observe({ model: e.model }, e.latencyMs / 1000);
        this.metrics.batchClosed.inc({ model: e.model, reason: e.reason });
        this.metrics.batchLimit.set({ model: e.model, policy: e.policy }, e.limit);
      },
    });

    // Results are written on a connection of their own, apart from BullMQ's.
    this.redis = createRedis(config.redis, 'producer');
    await whenReady(this.redis, 30_000);
    const keys = keysOf(this.redis, config.redis.prefix);
    this.store = new ResultStore(this.redis, keys, config.results.ttlSeconds);
    this.registry = new WorkerRegistry(this.redis, config.redis.prefix);
    this.drift = new DriftCounter(this.redis, keys, (config.maintenance.driftWindowMinutes + 5) * 60);
    this.stats = new StatsRecorder({
      redis: this.redis,
      prefix: config.redis.prefix,
      registry: this.metrics.registry,
      process: { id: this.id, role: 'worker', pool },
    });
    this.stats.start();
    // The control channel is global pub/sub, on a cluster too (core/redis-cluster.ts says why).
    this.control = createRedis(config.redis, 'subscriber');
    this.control.on('message', (_channel: string, raw: string) => {
      const msg = JSON.parse(raw) as ControlMessage;
      if (msg.type === 'models-changed' && msg.fingerprint !== this.repository.fingerprint)
        this.reloading = this.reloading
          .then(async () => void (await this.reload()))
          .catch((e: Error) => this.log.error({ err: e.message }, 'reload failed'));
    });
    await this.control.subscribe(keys.control);
    await this.announce();
    this.heartbeat = setInterval(() => void this.announce(), HEARTBEAT_MS);

    // Every shard of the pool, each with its share of the jobs in hand; one connection for all
    // of them (BullMQ gives each worker its own blocking connection besides).
    const shards = config.queue.shards[pool];
    this.bullConnection = createRedis(config.redis, 'blocking');
    for (let shard = 0; shard < shards; shard++) {
      const bull = new Worker<PredictionJobData>(keys.queueName(pool, shard), (job) => this.process(job), {
        connection: this.bullConnection,
        prefix: config.redis.prefix,
        concurrency: Math.ceil(shape.concurrency / shards),
        // Inference runs on threads, so the loop stays free to renew locks on time.
        lockDuration: config.workers.lockDurationMs,
        stalledInterval: Math.max(500, Math.floor(config.workers.lockDurationMs / 2)),
        maxStalledCount: 2,
      });
      bull.on('error', (err) => this.log.warn({ err: err.message }, 'queue connection error'));
      this.trackJobsInHand(bull);
      // Jobs failed outside the processor (stalled too often, lock lost) still owe their
      // client an answer; finish() writes nothing if the processor already answered.
      bull.on('failed', (job, err) => {
        if (!job || (job.attemptsMade < (job.opts.attempts ?? 1) && !/stalled/i.test(err.message))) return;
        const d = job.data;
        void this.answerFailure(d, new ServingError('INFERENCE_FAILED', 'the work was lost by its worker too many times')).catch(
          (e: Error) => this.log.warn({ err: e.message, predictionId: d.id }, 'could not record a failure'),
        );
      });
      this.bulls.push(bull);
    }
    this.log.info({ models: this.loaded, executionProvider: this.executionProvider, ...shape }, 'worker started');
  }

  /**
   * Rescans the repository and loads versions of this pool it does not serve yet. Versions
   * already loaded stay loaded, so work in flight on an old version finishes on it.
   */
  async reload(): Promise<string[]> {
    const { config, pool } = this.options;
    const repo = await scanConfigured(config, this.log);
    const fresh = repo.ready().filter((v) => v.config.pool === pool && !this.models.has(`${v.name}@${v.version}`));
    if (fresh.length === 0) return [];
    const { loaded, failed } = await this.inference.load(
      fresh.map((v) => ({ key: `${v.name}@${v.version}`, path: v.path, config: v.config })),
    );
    for (const f of failed) this.log.error({ model: f.key, reason: f.error }, 'new model version failed to load; skipped');
    const added: string[] = [];
    for (const v of fresh) {
      const key = `${v.name}@${v.version}`;
      if (loaded.includes(key)) {
        this.models.set(key, v);
        added.push(key);
      }
    }
    this.repository = repo;
    await this.announce();
    this.log.info({ added }, 'model versions loaded without restart');
    return added;
  }

  private batchingSpec(key: string): BatchingSpec {
    const spec = this.models.get(key)?.config.batching ?? { policy: 'fixed', maxBatchSize: 1, maxDelayMs: 0, sloMs: 50 };
    // Only the GPU pool batches; CPU work runs one request per inference.
    return this.options.pool === 'gpu' ? spec : { ...spec, policy: 'fixed', maxBatchSize: 1, maxDelayMs: 0 };
  }

  /** Live batching policy and limit of a model, for the API's `models` query and metrics. */
  batchingState(key: string): { policy: string; limit: number } | undefined {
    if (!this.models.has(key)) return undefined;
    const p = this.batcher.policy(key);
    return { policy: p.name, limit: p.limit() };
  }

  private async announce(): Promise<void> {
    await this.registry
      .announce(
        {
          id: this.id,
          pool: this.options.pool,
          models: this.stopping ? [] : this.loaded,
          executionProvider: this.executionProvider,
          batching: Object.fromEntries(this.loaded.map((k) => [k, this.batchingState(k)!])),
        },
        HEARTBEAT_MS * 3,
      )
      .catch((e: Error) => this.log.warn({ err: e.message }, 'heartbeat failed'));
  }

  private async process(job: Job<PredictionJobData>): Promise<{ status: string }> {
    const data = job.data;
    const log = this.log.child({ requestId: data.requestId, predictionId: data.id, model: data.model, attempt: job.attemptsMade + 1 });
    const key = `${data.model}@${data.version}`;
    const startedAt = Date.now();

    if (data.deadline !== undefined && startedAt > data.deadline) {
      await this.answerFailure(data, new ServingError('DEADLINE_EXCEEDED', 'the deadline passed before the work started'));
      log.info('deadline passed in the queue; dropped');
      return { status: 'FAILED' };
    }
    try {
      const model = this.models.get(key);
      if (!model) throw new ServingError('MODEL_NOT_READY', `this worker does not serve ${key}`);
      const deadlineMs = data.deadline !== undefined ? data.deadline - startedAt : undefined;
      const outcome = await this.batcher.submit(key, fromWire(data.input), data.rows, deadlineMs);
      const parts = answerParts(model.config, outcome.outputs, data.segments ?? [data.rows]);
      const finishedAt = Date.now();
      const queueMs = startedAt - data.enqueuedAt;
      if (data.replyTo) {
        await this.sendReply(data, {
          id: data.id,
          status: 'COMPLETED',
          parts,
          queueMs,
          inferenceMs: outcome.inferenceMs,
          batchRows: outcome.batchRows,
        });
      } else {
        const [part] = parts;
        if (part.error) throw fromSerialized(part.error);
        const result: PredictionResult = {
          id: data.id,
          model: data.model,
          version: data.version,
          predictions: part.predictions,
          outputs: part.outputs,
          timings: { queueMs, inferenceMs: outcome.inferenceMs, totalMs: finishedAt - data.enqueuedAt },
          cached: false,
          batchRows: outcome.batchRows,
        };
        // A job run again after a crash may already be answered: finish() then writes nothing.
        const written = await this.store.finishDurably(completed(data, result, finishedAt), undefined, {
          giveUp: () => this.stopping,
          onRetry: (e) => log.warn({ err: e.message }, 'Redis unreachable: holding the result and writing it again until Redis is back'),
        });
        if (!written) log.info('already answered; not answering again');
      }
      this.metrics.jobs.inc({ model: data.model, outcome: 'ok' });
      if (model.config.task === 'classification')
        this.drift?.add(
          key,
          parts.flatMap((p) => (p.error ? [] : p.predictions.map((r) => r.label))),
        );
      this.metrics.latency.observe({ model: data.model, phase: 'queue' }, queueMs / 1000);
      this.metrics.latency.observe({ model: data.model, phase: 'inference' }, outcome.inferenceMs / 1000);
      log.debug({ batchRows: outcome.batchRows, inferenceMs: outcome.inferenceMs, segments: parts.length }, 'predicted');
      return { status: 'COMPLETED' };
    } catch (e) {
      const err = e instanceof ServingError ? e : new ServingError('INFERENCE_FAILED', (e as Error).message);
      const attempts = job.opts.attempts ?? 1;
      // The input decides these: running it again gives the same answer.
      const final = err.code === 'BAD_USER_INPUT' || err.code === 'NON_FINITE_OUTPUT' || job.attemptsMade + 1 >= attempts;
      this.metrics.jobs.inc({ model: data.model, outcome: err.code });
      log.warn({ code: err.code, err: err.message, final }, 'prediction failed');
      if (final) {
        // The client sees the code and a message, never the runtime's own text (paths, internals).
        await this.answerFailure(
          data,
          err.code === 'INFERENCE_FAILED' ? new ServingError('INFERENCE_FAILED', 'the model failed to run on this input') : err,
        );
        throw new UnrecoverableError(err.message);
      }
      throw err;
    }
  }

  /**
   * A synchronous job's reply, sent again while Redis is unreachable but not past the job's
   * deadline: after it, the API has answered its requests DEADLINE_EXCEEDED already.
   */
  private sendReply(data: PredictionJobData, reply: SyncReply): Promise<void> {
    return whileUnreachable(() => this.store.reply(data.replyTo!, reply), {
      giveUp: () => this.stopping || (data.deadline !== undefined && Date.now() > data.deadline),
      maxDelayMs: 1000,
    });
  }

  /** The final failure of a job: its record for a poller or subscriber, or its reply for a waiting API. */
  private async answerFailure(data: PredictionJobData, err: ServingError): Promise<void> {
    if (data.replyTo)
      return this.sendReply(data, { id: data.id, status: 'FAILED', error: err.toJSON(), queueMs: 0, inferenceMs: 0, batchRows: 0 });
    await this.store.finishDurably(failed(data, err), undefined, { giveUp: () => this.stopping });
  }

  /** Jobs taken from the queue whose outcome BullMQ has not recorded yet. */
  private trackJobsInHand(bull: Worker<PredictionJobData>): void {
    bull.on('active', (job) => this.inHand.add(job.id!));
    bull.on('completed', (job) => this.inHand.delete(job.id!));
    bull.on('failed', (job) => job && this.inHand.delete(job.id!));
  }

  /**
   * Stops taking work, waits up to `shutdownTimeoutMs` for the jobs in hand, and releases
   * everything, in bounded time whatever Redis does (core/shutdown.ts). Resolves false when
   * it gave up on jobs: they are left to stall recovery, which hands them to another worker
   * once their locks expire. The last log line says what was given up.
   */
  async stop(): Promise<boolean> {
    if (this.stopping) return true;
    this.stopping = true;
    clearInterval(this.heartbeat);
    const timeout = this.options.config.workers.shutdownTimeoutMs;
    const deadline = new Deadline(timeout + RELEASE_MS);
    const unreachable = (): boolean => this.redis?.status !== 'ready';
    await deadline.step('withdraw from the worker registry', this.registry?.withdraw(this.id), 1000);
    this.batcher?.flush();
    let closed = true;
    if (this.bulls.length) {
      // BullMQ's close waits for the jobs in hand and for Redis to record their outcome;
      // with Redis gone and nothing in hand, there is nothing to wait for.
      closed = await deadline.within(Promise.all(this.bulls.map((b) => b.close())), timeout, () => unreachable() && this.inHand.size === 0);
    }
    this.bullConnection?.disconnect();
    const jobsLeft = this.inHand.size;
    await deadline.step('pending model reload', this.reloading);
    await deadline.step('inference threads', this.inference?.close());
    await deadline.step('drift counts', this.drift?.close(), Infinity, unreachable);
    await deadline.step('live stats', this.stats?.close(), Infinity, unreachable);
    const redis = unreachable() ? 'unreachable' : 'ready';
    this.control?.disconnect();
    this.redis?.disconnect();
    const dropped = [...(closed ? [] : ['queue connection']), ...deadline.dropped];
    if (jobsLeft > 0) {
      this.log.warn(
        { jobsLeftToStallRecovery: jobsLeft, redis, dropped, timeoutMs: timeout },
        `worker stopped, giving up on ${jobsLeft} job(s) in hand: their outcome is not recorded${redis === 'unreachable' ? ' and their results not written (Redis unreachable)' : ''}; stall recovery hands them to another worker once their locks expire`,
      );
      return false;
    }
    if (dropped.length) this.log.info({ redis, dropped }, `worker stopped with nothing in hand; gave up waiting on: ${dropped.join(', ')}`);
    else this.log.info('worker stopped');
    return true;
  }
}

/**
 * Each request's share of a job's outputs: its rows and their predictions, computed once
 * here (the API only hands them on). A request whose rows came out NaN or infinite gets a
 * NON_FINITE_OUTPUT of its own; the other requests of the job are answered.
 */
export function answerParts(config: ModelConfig, outputs: TensorValue[], segments: number[]): ReplyPart[] {
  const predictions = rowPredictions(config, outputs);
  let start = 0;
  return segments.map((rows) => {
    const at = start;
    start += rows;
    const bad = nonFiniteOutput(outputs, at, rows);
    if (bad) {
      const err = new ServingError(
        'NON_FINITE_OUTPUT',
        `the model produced ${bad.value} in output '${bad.name}' (value ${bad.index}) for this input; values that large or small overflow inside the model`,
      );
      return { predictions: [], outputs: [], error: err.toJSON() };
    }
    return { predictions: predictions.slice(at, at + rows), outputs: encodeRows(outputs, at, rows) };
  });
}

/** CUDA in the gpu pool when asked for or available, else CPU; the choice is logged. */
async function chooseExecutionProvider(wanted: 'auto' | 'cpu' | 'cuda', pool: PoolName, log: Logger): Promise<'cpu' | 'cuda'> {
  if (wanted === 'cpu' || (wanted === 'auto' && pool !== 'gpu')) return 'cpu';
  const ort = await import('onnxruntime-node');
  const cuda = ort.listSupportedBackends().find((b) => b.name === 'cuda');
  let usable = false;
  if (cuda) {
    // The binding lists CUDA even when its libraries are absent; only a real session tells.
    const { existsSync } = await import('node:fs');
    const { join, dirname } = await import('node:path');
    const { createRequire } = await import('node:module');
    const dir = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    usable = existsSync(join(dir, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so'));
  }
  if (!usable) {
    if (wanted === 'cuda') log.warn('CUDA execution provider requested but its libraries are not installed; using CPU');
    else log.info('CUDA libraries not installed; the gpu pool runs on CPU');
    return 'cpu';
  }
  return 'cuda';
}
