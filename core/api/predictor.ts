/**
 * Synchronous predictions: validate, answer from the cache, or send the request through the
 * edge batcher (core/batching/edge-batcher.ts) as part of one job and wait for the worker's reply.
 * It knows no GraphQL or HTTP.
 */
import { randomUUID } from 'node:crypto';
import type { RedisClient } from '../redis/connection.ts';
import { ServingError, asServingError } from '../errors/registry.ts';
import type { BatchlineConfig, PoolName } from '../config/settings.ts';
import { normalizeInput, toWire, type PredictionInput, type NormalizedInput } from '../prediction/input.ts';
import type { ModelVersion } from '../models/repository.ts';
import { DriftCounter } from '../drift/monitor.ts';
import { EdgeBatcher, type EdgeBatch, type EdgeJob } from '../batching/edge-batcher.ts';
import { batchingPlan } from '../batching/plan.ts';
import type { Keyspace } from '../redis/connection.ts';
import { MIRROR_PRIORITY, SYNC_PRIORITY, type PredictionQueues } from '../prediction/queues.ts';
import type { ResultFeed } from '../prediction/result-feed.ts';
import { PredictionCache, cacheKey } from './prediction-cache.ts';
import { observeLatency, type Metrics } from '../telemetry/metrics.ts';
import type { WorkerRegistry } from '../control/worker-registry.ts';
import { modelKey, newJob, type PredictionResult, type PredictionJobData } from '../prediction/record.ts';
import type { ModelCatalog } from './catalog.ts';
import { BYTES, base64ByteLength, type EncodedTensor } from '../tensor/codec.ts';
import {
  ATTR,
  SpanKind,
  ROOT_CONTEXT,
  activeContext,
  activeTraceId,
  carrierOf,
  carrierOfSpan,
  contextWith,
  endSpan,
  inSpan,
  nameActiveSpan,
  spanContextIn,
  startBatchSpan,
  startSpan,
  tracingOn,
  withSpan,
  type Context,
} from '../telemetry/trace.ts';
import type { MirrorRunner, Outcome, Route } from '../rollout/rollout.ts';

export interface PredictRequest {
  model: string;
  version?: string | null;
  input: PredictionInput;
  requestId: string;
  /** Deadline for this request; capped by the server's `predict.timeoutMs`. */
  timeoutMs?: number | null;
  /** Keeps one client on one version while a canary runs (`x-batchline-route-key`, or the `routeKey` argument). */
  routeKey?: string | null;
  /** The trace the request belongs to (W3C trace id), kept with a captured payload. */
  traceId?: string;
  /** The door it came by, the `operation` label of its metrics: GraphQL's `predict` (the default) or the inference protocol's. */
  operation?: PredictOperation;
}

/** The `operation` label of a synchronous request, one per door (the ops view counts them all). */
export const PREDICT_OPERATIONS = ['predict', 'infer_rest', 'infer_grpc'] as const;
export type PredictOperation = (typeof PREDICT_OPERATIONS)[number];

/**
 * A worker's outputs held to the model's config: each declared output once, with its datatype,
 * `rows` rows, its inner dimensions, and as many bytes as its shape needs. Anything else is an
 * answer the API cannot use: 502 BAD_GATEWAY naming the model, never a wrong 200.
 */
export function checkOutputs(mv: ModelVersion, rows: number, outputs: readonly EncodedTensor[]): void {
  const bad = (what: string): ServingError => new ServingError('BAD_GATEWAY', `model '${mv.name}' version ${mv.version} answered ${what}`);
  const given: unknown = outputs;
  if (!Array.isArray(given)) throw bad('no outputs');
  if (outputs.length !== mv.config.outputs.length)
    throw bad(`${outputs.length} output(s), its config declares ${mv.config.outputs.length}`);
  for (const o of outputs) {
    if (typeof o?.base64 !== 'string' || !Array.isArray(o.shape)) throw bad('an output that does not decode');
    const spec = mv.config.outputs.find((s) => s.name === o.name);
    if (!spec) throw bad(`an output '${o.name}' its config does not declare`);
    if (o.datatype !== spec.datatype) throw bad(`output '${o.name}' as ${o.datatype}, its config declares ${spec.datatype}`);
    const fits =
      o.shape.length === spec.shape.length && o.shape[0] === rows && spec.shape.every((d, i) => i === 0 || d === -1 || d === o.shape[i]);
    if (!fits)
      throw bad(
        `output '${o.name}' of shape ${JSON.stringify(o.shape)} for ${rows} row(s), its config declares ${JSON.stringify(spec.shape)}`,
      );
    const want = o.shape.reduce((a, b) => a * b, 1) * BYTES[spec.datatype];
    const got = base64ByteLength(o.base64);
    if (got !== want) throw bad(`output '${o.name}' with ${got} bytes, its shape ${JSON.stringify(o.shape)} needs ${want}`);
  }
}

/** Edge batcher groups of mirrored work start with this, so they never share a job with real work. */
const MIRROR_LANE = 'mirror|';

/** A request's deadline in ms: its own `timeoutMs` (a positive integer) capped by `max`, else `max`. */
export function requestTimeout(requested: number | null | undefined, max: number): number {
  if (requested == null) return max;
  if (!Number.isInteger(requested) || requested <= 0)
    throw new ServingError('BAD_USER_INPUT', `timeoutMs: expected a positive integer, got ${requested}`, { field: 'timeoutMs' });
  return Math.min(requested, max);
}

export interface PredictorDeps {
  config: BatchlineConfig;
  catalog: ModelCatalog;
  queues: PredictionQueues;
  feed: ResultFeed;
  workers: WorkerRegistry;
  redis: RedisClient;
  keys: Keyspace;
  metrics: Metrics;
  /** Told of every answer and failure, after the fact: the rollout's comparisons, mirrors and capture (core/rollout/rollout.ts). */
  observe?: (o: Outcome) => void;
}

export class Predictor {
  private readonly deps: PredictorDeps;
  private readonly cache: PredictionCache;
  /** Cache hits never reach a worker, so the drift monitor's counts of them are kept here. */
  private readonly driftCounts: DriftCounter;
  private readonly edge: EdgeBatcher;
  /** The model version behind each model key sent to the edge batcher, for its jobs. */
  private readonly groups = new Map<string, ModelVersion>();
  /** Mirrored work: each lane's queue depth past which it is refused, and its jobs out (taken back at shutdown). */
  private readonly mirrorDepth = new Map<string, number>();
  private readonly mirrorJobs = new Set<EdgeJob>();
  private mirrorsStopped = false;

  constructor(deps: PredictorDeps) {
    this.deps = deps;
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

  /**
   * The cached result for this input, counted as a hit (metrics and drift), or undefined.
   * Submissions are answered from it too (core/api/tickets.ts).
   */
  cached(mv: ModelVersion, input: NormalizedInput): PredictionResult | undefined {
    if (!mv.config.cache.enabled) return undefined;
    const hit = this.cache.peek(cacheKey(mv.name, mv.version, input));
    if (hit) this.countHit(mv, hit);
    return hit;
  }

  private countHit(mv: ModelVersion, result: PredictionResult): void {
    this.deps.metrics.cacheHits.inc({ model: mv.name });
    if (mv.config.task === 'classification')
      this.driftCounts.add(
        modelKey(mv.name, mv.version),
        result.predictions.map((p) => p.label),
      );
  }

  purgeCache(): number {
    return this.cache.purgeStale();
  }

  /** Synchronous prediction: the answer, or an error with its code. */
  predict(req: PredictRequest): Promise<PredictionResult> {
    const span = startSpan('predict', { attributes: { [ATTR.requestId]: req.requestId } });
    if (!span) return this.predictNow(req);
    return withSpan(span, () => this.predictNow(req)).then(
      (r) => {
        span.setAttributes({ [ATTR.cached]: r.cached, [ATTR.rows]: r.predictions.length, [ATTR.version]: r.version });
        span.end();
        return r;
      },
      (e: unknown) => {
        endSpan(span, e);
        throw e;
      },
    );
  }

  private async predictNow(req: PredictRequest): Promise<PredictionResult> {
    const started = performance.now();
    const { catalog, config, metrics } = this.deps;
    let modelName = req.model;
    let route: Route | undefined;
    let normalized: NormalizedInput | undefined;
    let rowCount: number | undefined;
    try {
      route = catalog.route(req.model, req.version, req.routeKey);
      const mv = route.mv;
      modelName = mv.name;
      nameActiveSpan(`predict ${mv.name}`, { [ATTR.model]: mv.name });
      const { input, rows } = normalizeInput(req.input, mv.config, config.predict.maxRows);
      normalized = input;
      rowCount = rows;
      const timeoutMs = requestTimeout(req.timeoutMs, config.predict.timeoutMs);
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
            () => this.compute(mv, input, rows, req.requestId, timeoutMs),
            mv.config.cache.ttlMs,
          ));
        if (cached) this.countHit(mv, result);
        else metrics.cacheMisses.inc({ model: mv.name });
      } else {
        result = await this.compute(mv, input, rows, req.requestId, timeoutMs);
      }
      const totalMs = performance.now() - started;
      observeLatency(metrics.latency, { model: mv.name, phase: 'total' }, totalMs / 1000);
      metrics.requests.inc({ model: mv.name, operation: req.operation ?? 'predict', outcome: 'ok' });
      const answer = cached
        ? { ...result, cached: true, timings: { queueMs: 0, batchWaitMs: 0, batchRows: 0, coldStartMs: 0, inferenceMs: 0, totalMs } }
        : { ...result, timings: { ...result.timings, totalMs } };
      // The capture keeps the trace id the client got back: the active span's when tracing is on, else its own `traceparent`'s.
      this.deps.observe?.({
        route,
        requestId: req.requestId,
        traceId: activeTraceId() ?? req.traceId,
        input,
        rows,
        result: answer,
        totalMs,
      });
      return answer;
    } catch (e) {
      const err = asServingError(e);
      metrics.requests.inc({ model: catalog.metricLabel(modelName), operation: req.operation ?? 'predict', outcome: err.code });
      if (route)
        this.deps.observe?.({
          route,
          requestId: req.requestId,
          input: normalized,
          rows: rowCount,
          error: err,
          totalMs: performance.now() - started,
        });
      throw err;
    }
  }

  /**
   * Runs `input` on `mv` as mirrored work for the rollout's comparisons: through the edge
   * batcher in a lane of its own, at BullMQ's lowest priority, with its own deadline, refused
   * once the pool has `maxQueueDepth` jobs waiting. Never cached, never counted as a request.
   */
  readonly runMirror: MirrorRunner = (mv, input, rows, o) =>
    this.compute(mv, input, rows, o.requestId, o.timeoutMs, { maxQueueDepth: o.maxQueueDepth });

  /** Shutdown: mirrored work still out is taken back, and no more is sent (nobody waits for it). */
  abandonMirrors(): void {
    this.mirrorsStopped = true;
    for (const job of this.mirrorJobs) job.abandon();
    this.mirrorJobs.clear();
  }

  /**
   * A synchronous prediction's inference: through the edge batcher, which sends concurrent
   * requests of one model as one job, within the limits core/batching/plan.ts gives the model.
   */
  private async compute(
    mv: ModelVersion,
    input: NormalizedInput,
    rows: number,
    requestId: string,
    timeoutMs: number,
    mirror?: { maxQueueDepth: number },
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
    const lane = mirror ? `${MIRROR_LANE}${key}` : key;
    this.groups.set(lane, mv);
    if (mirror) this.mirrorDepth.set(lane, mirror.maxQueueDepth);
    const answer = await this.edge.submit(
      lane,
      batchingPlan(mv.config.pool, mv.config).edge,
      input,
      rows,
      timeoutMs,
      requestId,
      activeContext(),
    );
    checkOutputs(mv, rows, answer.part.outputs);
    return {
      id: randomUUID(),
      model: mv.name,
      version: mv.version,
      predictions: answer.part.predictions,
      outputs: answer.part.outputs,
      timings: {
        queueMs: answer.queueMs,
        batchWaitMs: answer.batchWaitMs,
        batchRows: answer.batchRows,
        coldStartMs: answer.coldStartMs,
        inferenceMs: answer.inferenceMs,
        totalMs: performance.now() - started,
      },
      cached: false,
      batchRows: answer.batchRows,
    };
  }

  /**
   * One edge batch as one synchronous job; no record is stored for it (nobody could read it).
   * Traced, the batch is a span of its own (linked to each request, from its gathering to its
   * reply) whose `send` span enqueues the job; the job carries each request's context.
   */
  private dispatch(batch: EdgeBatch): EdgeJob {
    const mv = this.groups.get(batch.modelKey)!;
    const { feed, queues, config } = this.deps;
    const mirrorDepth = this.mirrorDepth.get(batch.modelKey);
    if (mirrorDepth !== undefined && this.mirrorsStopped)
      return { reply: Promise.reject(new ServingError('SERVICE_UNAVAILABLE', 'shutting down')), abandon: () => {} };
    const job: PredictionJobData = {
      ...newJob(mv, toWire(batch.input), batch.rows, batch.requestIds[0], undefined, lanesOf(config, mv.config.pool)),
      deadline: batch.deadline,
      replyTo: feed.replyChannel,
      segments: batch.segments,
      requestIds: batch.requestIds,
    };
    const members = tracingOn() ? (batch.traces as (Context | undefined)[]) : [];
    const span = startBatchSpan(`edge batch ${mv.name}`, members, members.map(spanContextIn), {
      startTime: Date.now() - batch.gatheredMs,
      attributes: {
        [ATTR.model]: mv.name,
        [ATTR.version]: mv.version,
        [ATTR.rows]: batch.rows,
        [ATTR.requests]: batch.segments.length,
        [ATTR.edgeReason]: batch.reason,
      },
    });
    // Wait first, enqueue second: the reply may come before `enqueue` returns.
    const wait = feed.expect(job.id);
    const reply = enqueueTraced(queues, job, contextWith(span, ROOT_CONTEXT), members, {
      priority: mirrorDepth === undefined ? SYNC_PRIORITY : MIRROR_PRIORITY,
      attempts: mirrorDepth === undefined ? mv.config.retry.attempts : 1,
      backoffMs: mv.config.retry.backoffMs,
      keepSeconds: config.results.ttlSeconds,
      ...(mirrorDepth === undefined ? {} : { maxDepth: mirrorDepth }),
    }).then(
      () => wait.promise,
      (e: unknown) => {
        wait.cancel();
        throw asServingError(e);
      },
    );
    if (span)
      reply.then(
        () => span.end(),
        (e: unknown) => endSpan(span, e),
      );
    const edgeJob: EdgeJob = {
      reply,
      abandon: () => {
        wait.cancel(new ServingError('DEADLINE_EXCEEDED'));
        // Not started yet: take it back so no worker spends time on an answer nobody reads.
        void queues.removeIfWaiting(mv.config.pool, job.id);
      },
    };
    if (mirrorDepth !== undefined) {
      this.mirrorJobs.add(edgeJob);
      void reply.catch(() => {}).finally(() => this.mirrorJobs.delete(edgeJob));
    }
    return edgeJob;
  }
}

/** Shards that are lanes by model version (`queue.placement: model`), else 1: ids are drawn at random. */
export function lanesOf(config: BatchlineConfig, pool: PoolName): number {
  return config.queue.placement === 'model' ? config.queue.shards[pool] : 1;
}

/**
 * `queues.enqueue` (`queues.add` for a job already `admitted`), traced under `parent` (a sampled request's or batch's context; nothing is
 * traced without one): a `send <queue>` producer span (admission and the add), the context the
 * job carries for its consumer, and each part's own context beside it.
 */
export function enqueueTraced(
  queues: PredictionQueues,
  job: PredictionJobData,
  parent: Context | undefined,
  parts: readonly (Context | undefined)[],
  options: Parameters<PredictionQueues['enqueue']>[1],
  admitted = false,
): Promise<void> {
  // An admitted job (core/api/tickets.ts admits a coalesced job's parts first) is only added.
  const send = (): Promise<void> => (admitted ? queues.add(job, options) : queues.enqueue(job, options));
  if (!parent) return send();
  const queue = queues.queue(job.pool, job.id).name;
  return inSpan(
    parent,
    `send ${queue}`,
    {
      kind: SpanKind.PRODUCER,
      attributes: {
        [ATTR.messagingSystem]: 'bullmq',
        [ATTR.messagingOperationType]: 'send',
        [ATTR.messagingOperationName]: 'send',
        [ATTR.messagingDestination]: queue,
        [ATTR.messagingMessageId]: job.id,
        [ATTR.priority]: options.priority,
        [ATTR.pool]: job.pool,
      },
    },
    (span) => {
      const own = carrierOfSpan(span);
      if (own) job.trace = { job: own, parts: parts.map((p) => carrierOf(p) ?? null) };
      return send();
    },
  );
}
