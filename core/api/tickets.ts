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
import { requestTimeout, type PredictRequest, type Predictor } from './predictor.ts';

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
  async submit(req: SubmitRequest): Promise<Ticket> {
    const { catalog, config, metrics, store, queues } = this.deps;
    let modelName = req.model;
    try {
      // Routed as predict is (canary, sticky keys); shadow runs and comparisons are for synchronous answers only.
      const mv = catalog.route(req.model, req.version, req.routeKey).mv;
      modelName = mv.name;
      const { input, rows } = normalizeInput(req.input, mv.config, config.predict.maxRows);
      const priority = bullPriority(req.priority);
      const timeoutMs = req.timeoutMs == null ? undefined : requestTimeout(req.timeoutMs, config.predict.timeoutMs);
      const job = newJob(mv, toWire(input), rows, req.requestId, timeoutMs);
      const hit = this.deps.predictor.cached(mv, input);
      if (hit) {
        const result: PredictionResult = { ...hit, id: job.id, cached: true, timings: { queueMs: 0, inferenceMs: 0, totalMs: 0 } };
        await store.finish(completed(job, result));
        metrics.requests.inc({ model: mv.name, operation: 'submit', outcome: 'ok' });
        return { id: job.id, status: 'COMPLETED', model: mv.name, version: mv.version, submittedAt: job.enqueuedAt };
      }
      await store.accept(accepted(job));
      try {
        // On a cluster the ticket is given once replicas hold the job and the record (core/redis/cluster.ts).
        await Promise.all([
          queues.enqueue(job, {
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

  /** The final record of `id`, once, as an async iterator (see ResultFeed.watch). */
  async watch(id: string): Promise<AsyncIterableIterator<PredictionRecord>> {
    try {
      return await this.deps.feed.watch(id);
    } catch (e) {
      throw asServingError(e);
    }
  }
}
