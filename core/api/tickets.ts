/**
 * Asynchronous predictions: a submission gets a ticket at once (its record is stored, then
 * its job enqueued); the result is read by id, watched until final, or the work cancelled
 * before it starts. It knows no GraphQL or HTTP.
 */
import { ServingError, asServingError } from '../errors/registry.ts';
import type { BatchlineConfig } from '../config/settings.ts';
import { normalizeInput, toWire } from '../prediction/input.ts';
import { bullPriority, type PredictionQueues } from '../prediction/queues.ts';
import type { ResultStore } from '../prediction/result-store.ts';
import type { ResultFeed } from '../prediction/result-feed.ts';
import type { LostWork } from '../prediction/lost-work.ts';
import type { Metrics } from '../telemetry/metrics.ts';
import { accepted, cancelled, completed, failed, newJob, type PredictionRecord, type PredictionResult } from '../prediction/record.ts';
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

export class Tickets {
  private readonly deps: TicketsDeps;

  constructor(deps: TicketsDeps) {
    this.deps = deps;
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
    const { catalog, config, metrics, store, queues } = this.deps;
    let modelName = req.model;
    try {
      // Routed as predict is (canary, sticky keys); shadow runs and comparisons are for synchronous answers only.
      const mv = catalog.route(req.model, req.version, req.routeKey).mv;
      modelName = mv.name;
      nameActiveSpan(`submit ${mv.name}`, { [ATTR.model]: mv.name, [ATTR.priority]: req.priority ?? 5 });
      const { input, rows } = normalizeInput(req.input, mv.config, config.predict.maxRows);
      const priority = bullPriority(req.priority);
      const timeoutMs = req.timeoutMs == null ? undefined : requestTimeout(req.timeoutMs, config.predict.timeoutMs);
      const job = newJob(mv, toWire(input), rows, req.requestId, timeoutMs, lanesOf(config, mv.config.pool));
      // A sampled submission's context: its record keeps it, so each delivery of the result links to it.
      const submission = activeContext();
      const carrier = carrierOf(submission);
      if (carrier) job.trace = { parts: [carrier] };
      const hit = this.deps.predictor.cached(mv, input);
      if (hit) {
        const timings = { queueMs: 0, batchWaitMs: 0, batchRows: 0, coldStartMs: 0, inferenceMs: 0, totalMs: 0 };
        const result: PredictionResult = { ...hit, id: job.id, cached: true, timings };
        await store.finish(completed(job, result));
        metrics.requests.inc({ model: mv.name, operation: 'submit', outcome: 'ok' });
        return { id: job.id, status: 'COMPLETED', model: mv.name, version: mv.version, submittedAt: job.enqueuedAt };
      }
      await store.accept(accepted(job));
      try {
        // On a cluster the ticket is given once replicas hold the job and the record (core/redis/cluster.ts).
        await Promise.all([
          enqueueTraced(queues, job, carrier && submission, [submission], {
            priority,
            attempts: mv.config.retry.attempts,
            backoffMs: mv.config.retry.backoffMs,
            keepSeconds: config.results.ttlSeconds,
            replicated: true,
          }),
          store.replicated(store.key(job.id)),
        ]);
      } catch (e) {
        const err = asServingError(e);
        // Refused work must not look accepted to a poller.
        await store.finish(failed(job, err)).catch(() => {});
        throw err;
      }
      metrics.requests.inc({ model: mv.name, operation: 'submit', outcome: 'ok' });
      return { id: job.id, status: 'QUEUED', model: mv.name, version: mv.version, submittedAt: job.enqueuedAt };
    } catch (e) {
      const err = asServingError(e);
      metrics.requests.inc({ model: catalog.metricLabel(modelName), operation: 'submit', outcome: err.code });
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
      const { lostWork } = this.deps;
      if (job && (await job.getState().catch(() => '')) === 'active') rec.status = 'RUNNING';
      else if (job === undefined && lostWork?.due(rec)) rec = (await lostWork.settle(rec).catch(() => undefined)) ?? rec;
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
