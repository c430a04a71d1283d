/**
 * Asynchronous predictions: a submission gets a ticket at once (its record is stored, then
 * its job enqueued); the result is read by id, watched until final, or the work cancelled
 * before it starts. It knows no GraphQL or HTTP.
 *
 * Concurrent submissions of one model version, row shape and priority share a job
 * (core/batching/submit-batcher.ts), as concurrent predicts do at the edge batcher: their
 * admission (`queue.maxDepth` counts each), records and job cost two round trips to Redis for
 * all of them. Each keeps its own id, record, deadline and cancellation; the worker answers
 * each its own part (core/worker/processor.ts).
 */
import { ServingError, asServingError } from '../errors/registry.ts';
import type { BatchlineConfig } from '../config/settings.ts';
import { normalizeInput, toWire, type NormalizedInput } from '../prediction/input.ts';
import { mergeInputs, shapeSignature } from '../batching/merge.ts';
import { batchingPlan } from '../batching/plan.ts';
import { SubmitBatcher, type GatheredOutcome } from '../batching/submit-batcher.ts';
import type { ModelVersion } from '../models/repository.ts';
import { bullPriority, type PredictionQueues } from '../prediction/queues.ts';
import type { ResultStore } from '../prediction/result-store.ts';
import type { ResultFeed } from '../prediction/result-feed.ts';
import type { LostWork } from '../prediction/lost-work.ts';
import type { Metrics } from '../telemetry/metrics.ts';
import {
  cancelled,
  completed,
  modelKey,
  newJob,
  partAccepted,
  partIds,
  jobId,
  type JobPart,
  type PredictionJobData,
  type PredictionRecord,
  type PredictionResult,
} from '../prediction/record.ts';
import type { ModelCatalog } from './catalog.ts';
import { enqueueTraced, lanesOf, requestTimeout, type PredictRequest, type Predictor } from './predictor.ts';
import {
  ATTR,
  SpanKind,
  activeContext,
  carrierOf,
  endSpan,
  nameActiveSpan,
  isSampled,
  spanContextOf,
  startSpan,
  withSpan,
  type Context,
  type TraceCarrier,
} from '../telemetry/trace.ts';

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

export interface TicketsDeps {
  config: BatchlineConfig;
  catalog: ModelCatalog;
  /** A submission whose answer is cached is completed at once from the predictor's cache. */
  predictor: Pick<Predictor, 'cached'>;
  queues: PredictionQueues;
  store: ResultStore;
  feed: ResultFeed;
  metrics: Metrics;
  /** Ends records whose job Redis lost, when a poll finds one (core/prediction/lost-work.ts). */
  lostWork?: LostWork;
}

/** A submission waiting to share a job. */
interface Submission {
  mv: ModelVersion;
  input: NormalizedInput;
  rows: number;
  requestId: string;
  priority: number;
  timeoutMs?: number;
  submittedAt: number;
  /** The submission's sampled trace context, if any. */
  context?: Context;
  /** That context as its record and its job carry it (`traceparent`), read once. */
  carrier?: TraceCarrier;
}

export class Tickets {
  private readonly deps: TicketsDeps;
  private readonly gatherer: SubmitBatcher<Submission, Ticket>;

  constructor(deps: TicketsDeps) {
    this.deps = deps;
    this.gatherer = new SubmitBatcher({ dispatch: (_group, items) => this.dispatch(items) });
  }

  /** Asynchronous prediction: a ticket at once; the result comes by subscription or polling. */
  submit(req: SubmitRequest): Promise<Ticket> {
    const span = startSpan('submit', { attributes: { [ATTR.requestId]: req.requestId } });
    if (!span) return this.submitNow(req);
    return withSpan(span, () => this.submitNow(req)).then(
      (t) => {
        span.setAttributes({ [ATTR.predictionId]: t.id, [ATTR.version]: t.version, [ATTR.cached]: t.status === 'COMPLETED' });
        span.end();
        return t;
      },
      (e: unknown) => {
        endSpan(span, e);
        throw e;
      },
    );
  }

  private async submitNow(req: SubmitRequest): Promise<Ticket> {
    const { catalog, config, metrics, store } = this.deps;
    let modelName = req.model;
    try {
      // Routed as predict is (canary, sticky keys); shadow runs and comparisons are for synchronous answers only.
      const mv = catalog.route(req.model, req.version, req.routeKey).mv;
      modelName = mv.name;
      nameActiveSpan(`submit ${mv.name}`, { [ATTR.model]: mv.name, [ATTR.priority]: req.priority ?? 5 });
      const { input, rows } = normalizeInput(req.input, mv.config, config.predict.maxRows);
      const priority = bullPriority(req.priority);
      const timeoutMs = req.timeoutMs == null ? undefined : requestTimeout(req.timeoutMs, config.predict.timeoutMs);
      // A sampled submission's context: its record keeps it, so each delivery of the result links to it.
      const submission = activeContext();
      const carrier = carrierOf(submission);
      const hit = this.deps.predictor.cached(mv, input);
      if (hit) {
        const job = newJob(mv, toWire(input), rows, req.requestId, timeoutMs);
        if (carrier) job.trace = { parts: [carrier] };
        const timings = { queueMs: 0, batchWaitMs: 0, batchRows: 0, coldStartMs: 0, inferenceMs: 0, totalMs: 0 };
        const result: PredictionResult = { ...hit, id: job.id, cached: true, timings };
        await store.finish(completed(job, result));
        metrics.requests.inc({ model: mv.name, operation: 'submit', outcome: 'ok' });
        return { id: job.id, status: 'COMPLETED', model: mv.name, version: mv.version, submittedAt: job.enqueuedAt };
      }
      const group = `${modelKey(mv.name, mv.version)}#${shapeSignature(input)}#${priority}`;
      const ticket = await this.gatherer.submit(group, batchingPlan(mv.config.pool, mv.config).edge, rows, {
        mv,
        input,
        rows,
        requestId: req.requestId,
        priority,
        timeoutMs,
        submittedAt: Date.now(),
        ...(carrier ? { context: submission, carrier } : {}),
      });
      metrics.requests.inc({ model: mv.name, operation: 'submit', outcome: 'ok' });
      return ticket;
    } catch (e) {
      const err = asServingError(e);
      metrics.requests.inc({ model: catalog.metricLabel(modelName), operation: 'submit', outcome: err.code });
      throw err;
    }
  }

  /**
   * Sends gathered submissions as one job: admission (as many as `queue.maxDepth` leaves room
   * for, in order) and their records in one round trip, then the job; the ones refused get
   * QUEUE_FULL. Their records are written before the job, so a worker always finds them.
   */
  private async dispatch(items: Submission[]): Promise<GatheredOutcome<Ticket>[]> {
    const { queues, store, config } = this.deps;
    const { mv, priority } = items[0];
    const now = Date.now();
    // Under `queue.placement: model` the job's id (the first part's) falls in its version's lane.
    const ids = partIds(items.length, jobId(mv, lanesOf(config, mv.config.pool)));
    const parts: JobPart[] = items.map((it, i) => ({
      id: ids[i],
      requestId: it.requestId,
      rows: it.rows,
      ...(it.timeoutMs !== undefined ? { deadline: it.submittedAt + it.timeoutMs } : {}),
      submittedAt: it.submittedAt,
    }));
    const head = { id: ids[0], model: mv.name, version: mv.version, pool: mv.config.pool };
    const records = parts.map((p, i) => partAccepted(head, p, items[i].carrier));
    const [admitted, stored] = await Promise.allSettled([queues.admit(mv.config.pool, head.id, items.length), store.acceptMany(records)]);
    if (admitted.status === 'rejected' || stored.status === 'rejected') {
      // Neither half stands alone: an admission without its records is given back at once (else it ages out).
      if (admitted.status === 'fulfilled' && admitted.value.admitted > 0) void queues.unadmit(mv.config.pool, head.id).catch(() => {});
      if (stored.status === 'fulfilled') void store.forget(ids).catch(() => {});
      throw asServingError(admitted.status === 'rejected' ? admitted.reason : (stored as PromiseRejectedResult).reason);
    }
    const admission = admitted.value;
    const k = admission.admitted;
    // Never handed out: nobody can ask for them.
    if (k < items.length) void store.forget(ids.slice(k)).catch(() => {});
    if (k === 0) return items.map(() => ({ ok: false, error: admission.refusal! }));
    const taken = items.slice(0, k);
    const deadlines = parts.slice(0, k).map((p) => p.deadline);
    const job: PredictionJobData = {
      ...head,
      requestId: items[0].requestId,
      input: toWire(mergeInputs(taken.map((it) => it.input))),
      rows: taken.reduce((sum, it) => sum + it.rows, 0),
      enqueuedAt: now,
      // The job's own deadline is its last part's: the worker drops each part at its own.
      ...(deadlines.every((d) => d !== undefined) ? { deadline: Math.max(...deadlines) } : {}),
      segments: taken.map((it) => it.rows),
      requestIds: taken.map((it) => it.requestId),
      parts: parts.slice(0, k),
    };
    const contexts = taken.map((it) => it.context);
    const carriers = taken.map((it) => it.carrier ?? null);
    if (carriers.some(Boolean)) job.trace = { parts: carriers };
    try {
      // On a cluster the tickets are given once replicas hold the job and the records (core/redis/cluster.ts).
      await Promise.all([
        enqueueTraced(
          queues,
          job,
          contexts.find((c) => c !== undefined),
          contexts,
          {
            priority,
            attempts: mv.config.retry.attempts,
            backoffMs: mv.config.retry.backoffMs,
            keepSeconds: config.results.ttlSeconds,
            replicated: true,
          },
          true,
        ),
        store.replicated(store.key(head.id)),
      ]);
    } catch (e) {
      // Refused work must not look accepted to a poller.
      void store.forget(ids.slice(0, k)).catch(() => {});
      throw asServingError(e);
    }
    return items.map((it, i) =>
      i < k
        ? { ok: true, value: { id: ids[i], status: 'QUEUED', model: mv.name, version: mv.version, submittedAt: it.submittedAt } }
        : { ok: false, error: admission.refusal! },
    );
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
      const job = await this.deps.queues.getJob(rec.pool, rec.job ?? id).catch(() => null);
      const { lostWork } = this.deps;
      if (job && (await job.getState().catch(() => '')) === 'active') rec.status = 'RUNNING';
      else if (job === undefined && lostWork?.due(rec)) rec = (await lostWork.settle(rec).catch(() => undefined)) ?? rec;
    }
    return rec;
  }

  /**
   * Cancels work that has not started: its record is answered CANCELLED (its subscribers get
   * the event) and it stops counting against `queue.maxDepth`; a job none of whose parts is
   * left is taken back, and a worker that takes a job skips its cancelled parts. Already
   * cancelled work answers as is; started or finished work is NOT_CANCELLABLE.
   */
  async cancel(id: string, requestId: string): Promise<PredictionRecord> {
    const { queues, store } = this.deps;
    const rec = await this.get(id);
    if (rec.status === 'CANCELLED') return rec;
    const jobId = rec.job ?? rec.id;
    const notCancellable = (status: string): ServingError =>
      new ServingError('NOT_CANCELLABLE', `prediction '${id}' is ${status}; only queued work can be cancelled`);
    if (rec.status !== 'QUEUED') throw notCancellable(rec.status);
    if (!(await queues.isWaiting(rec.pool, jobId))) throw notCancellable('RUNNING');
    const done = cancelled(rec, requestId);
    try {
      if (!(await store.finish(done))) {
        // Answered meanwhile (by a worker, or by another cancel).
        const now = await store.get(id);
        if (now?.status === 'CANCELLED') return now;
        throw notCancellable(now?.status ?? 'RUNNING');
      }
      // The last part counted of its job (none beyond it): nothing is left to run.
      if ((await queues.release(rec.pool, jobId, 1)) === 0) await queues.removeIfWaiting(rec.pool, jobId);
    } catch (e) {
      throw asServingError(e);
    }
    this.deps.metrics.requests.inc({ model: rec.model, operation: 'cancel', outcome: 'ok' });
    return done;
  }

  /**
   * The final record of `id`, once, as an async iterator (see ResultFeed.watch). Traced, each
   * delivery is a span in the subscriber's trace, from the worker's finish to the hand-over,
   * linked to the submission's trace.
   */
  async watch(id: string): Promise<AsyncIterableIterator<PredictionRecord>> {
    let records: AsyncIterableIterator<PredictionRecord>;
    try {
      records = await this.deps.feed.watch(id);
    } catch (e) {
      throw asServingError(e);
    }
    const subscriber = activeContext();
    return subscriber && isSampled(subscriber) ? tracedDeliveries(records, subscriber) : records;
  }
}

/**
 * Delivers each record with a `deliver` span under the subscriber's context. A plain wrapper,
 * not an async generator: `return()` must reach the feed at once when a client unsubscribes,
 * even while a `next()` is pending.
 */
function tracedDeliveries(records: AsyncIterableIterator<PredictionRecord>, subscriber: Context): AsyncIterableIterator<PredictionRecord> {
  const traced: AsyncIterableIterator<PredictionRecord> = {
    async next() {
      const r = await records.next();
      if (!r.done) {
        const rec = r.value;
        const submission = spanContextOf(rec.trace);
        const span = startSpan(`deliver ${rec.model}`, {
          kind: SpanKind.PRODUCER,
          parent: subscriber,
          startTime: rec.finishedAt,
          links: submission ? [{ context: submission }] : [],
          attributes: { [ATTR.model]: rec.model, [ATTR.version]: rec.version, [ATTR.predictionId]: rec.id, 'batchline.status': rec.status },
        });
        span?.end();
      }
      return r;
    },
    return: (value?: unknown) => records.return?.(value) ?? Promise.resolve({ done: true, value: undefined }),
    throw: (e?: unknown) => records.throw?.(e) ?? Promise.reject(e),
    [Symbol.asyncIterator]() {
      return traced;
    },
  };
  return traced;
}
