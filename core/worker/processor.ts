/**
 * What a worker does with one BullMQ job: drop it when its deadline has passed, run its rows
 * through the batcher, answer each request of an edge batch its own share (a synchronous job
 * by a reply to the waiting API, an asynchronous one by its durable record), and decide on
 * failure whether BullMQ retries it or this was the last attempt. Nothing here starts or
 * stops a process: workers/prediction-worker.ts owns the lifecycle.
 */
import { UnrecoverableError, type Job } from 'bullmq';
import { ServingError, fromSerialized } from '../errors/registry.ts';
import type { ModelVersion } from '../models/repository.ts';
import { nonFiniteOutput, rowPredictions } from '../runtime/postprocess.ts';
import { encodeRows } from '../tensor/codec.ts';
import type { TensorValue } from '../tensor/tensor.ts';
import type { Batcher } from '../batching/batcher.ts';
import type { ModelConfig } from '../models/config.ts';
import { fromWire } from '../prediction/input.ts';
import type { ResultStore } from '../prediction/result-store.ts';
import type { ReplyPublisher } from '../prediction/result-feed.ts';
import { observeLatency, type Metrics } from '../telemetry/metrics.ts';
import type { DriftCounter } from '../drift/monitor.ts';
import type { Logger } from '../telemetry/logger.ts';
import {
  completed,
  failed,
  modelKey,
  type PredictionJobData,
  type PredictionResult,
  type ReplyPart,
  type SyncReply,
} from '../prediction/record.ts';
import { ATTR, endSpan, inSpan, recordColdLoad, untraced, withContext } from '../telemetry/trace.ts';
import { startJobSpans, type JobSpans } from './tracing.ts';

/**
 * BullMQ fails a job that stalled more often than `maxStalledCount` outside the processor,
 * and says so only in the error's text ('job stalled more than allowable limit'): no code.
 */
export function isStalledFailure(err: Error): boolean {
  return /stalled/i.test(err.message);
}

export interface JobProcessorDeps {
  models: ReadonlyMap<string, ModelVersion>;
  batcher: Batcher;
  store: ResultStore;
  replies: ReplyPublisher;
  metrics: Metrics;
  drift?: DriftCounter;
  log: Logger;
  /** True once the worker is stopping: retries of Redis writes give up then. */
  stopping(): boolean;
  /**
   * The cold-start hook: resolves once `modelKey` is loaded in this worker, with how long the
   * job waited for it (0 when it was loaded already). On-demand loading plugs in here; the
   * wait becomes the answer's `timings.coldStartMs` and a `load <model>` span.
   */
  coldStart?: (modelKey: string) => Promise<number>;
}

export class JobProcessor {
  private readonly deps: JobProcessorDeps;

  constructor(deps: JobProcessorDeps) {
    this.deps = deps;
  }

  async process(job: Job<PredictionJobData>): Promise<{ status: string }> {
    const spans = startJobSpans(job, Date.now());
    if (!spans) return untraced(() => this.run(job));
    try {
      const out = await withContext(spans.context, () => this.run(job, spans));
      endSpan(spans.span);
      return out;
    } catch (e) {
      endSpan(spans.span, e);
      throw e;
    }
  }

  private async run(job: Job<PredictionJobData>, spans?: JobSpans): Promise<{ status: string }> {
    const { models, batcher, store, metrics } = this.deps;
    const data = job.data;
    const log = this.deps.log.child({ requestId: data.requestId, predictionId: data.id, model: data.model, attempt: job.attemptsMade + 1 });
    const key = modelKey(data.model, data.version);
    const startedAt = Date.now();

    if (data.deadline !== undefined && startedAt > data.deadline) {
      await this.answerFailure(data, new ServingError('DEADLINE_EXCEEDED', 'the deadline passed before the work started'));
      log.info('deadline passed in the queue; dropped');
      return { status: 'FAILED' };
    }
    try {
      const coldStartMs = (await this.deps.coldStart?.(key)) ?? 0;
      recordColdLoad(spans?.context, data.model, coldStartMs);
      const model = models.get(key);
      if (!model) throw new ServingError('MODEL_NOT_READY', `this worker does not serve ${key}`);
      const deadlineMs = data.deadline !== undefined ? data.deadline - Date.now() : undefined;
      const outcome = await batcher.submit(key, fromWire(data.input), data.rows, deadlineMs, spans?.item);
      const parts = answerParts(model.config, outcome.outputs, data.segments ?? [data.rows]);
      const finishedAt = Date.now();
      const queueMs = startedAt - data.enqueuedAt;
      if (data.replyTo) {
        await inSpan(spans?.context, `reply ${data.model}`, { attributes: { [ATTR.requests]: parts.length } }, () =>
          this.sendReply(data, {
            id: data.id,
            status: 'COMPLETED',
            parts,
            queueMs,
            inferenceMs: outcome.inferenceMs,
            batchRows: outcome.batchRows,
            batchWaitMs: outcome.batchWaitMs,
            coldStartMs,
          }),
        );
      } else {
        const [part] = parts;
        if (part.error) throw fromSerialized(part.error);
        const result: PredictionResult = {
          id: data.id,
          model: data.model,
          version: data.version,
          predictions: part.predictions,
          outputs: part.outputs,
          timings: {
            queueMs,
            batchWaitMs: outcome.batchWaitMs,
            batchRows: outcome.batchRows,
            coldStartMs,
            inferenceMs: outcome.inferenceMs,
            totalMs: finishedAt - data.enqueuedAt,
          },
          cached: false,
          batchRows: outcome.batchRows,
        };
        // A job run again after a crash may already be answered: finish() then writes nothing.
        const written = await inSpan(spans?.context, `finish ${data.model}`, { attributes: { [ATTR.predictionId]: data.id } }, () =>
          store.finishDurably(completed(data, result, finishedAt), {
            giveUp: () => this.deps.stopping(),
            onRetry: (e) => log.warn({ err: e.message }, 'Redis unreachable: holding the result and writing it again until Redis is back'),
          }),
        );
        if (!written) log.info('already answered; not answering again');
      }
      metrics.jobs.inc({ model: data.model, outcome: 'ok' });
      if (model.config.task === 'classification')
        this.deps.drift?.add(
          key,
          parts.flatMap((p) => (p.error ? [] : p.predictions.map((r) => r.label))),
        );
      observeLatency(metrics.latency, { model: data.model, phase: 'queue' }, queueMs / 1000);
      observeLatency(metrics.latency, { model: data.model, phase: 'inference' }, outcome.inferenceMs / 1000);
      log.debug({ batchRows: outcome.batchRows, inferenceMs: outcome.inferenceMs, segments: parts.length }, 'predicted');
      return { status: 'COMPLETED' };
    } catch (e) {
      const err = e instanceof ServingError ? e : new ServingError('INFERENCE_FAILED', (e as Error).message);
      const attempts = job.opts.attempts ?? 1;
      // The input decides these: running it again gives the same answer.
      // So do these of the version (its size, its file): every worker of the pool would refuse it the same way.
      const final =
        err.code === 'BAD_USER_INPUT' ||
        err.code === 'NON_FINITE_OUTPUT' ||
        err.code === 'MODEL_TOO_LARGE' ||
        err.code === 'MODEL_LOAD_FAILED' ||
        job.attemptsMade + 1 >= attempts;
      metrics.jobs.inc({ model: data.model, outcome: err.code });
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
   * BullMQ's `failed` event. Jobs failed outside the processor (stalled too often, lock lost)
   * still owe their client an answer; finish() writes nothing if the processor already answered.
   */
  onFailed(job: Job<PredictionJobData> | undefined, err: Error): void {
    if (!job || (job.attemptsMade < (job.opts.attempts ?? 1) && !isStalledFailure(err))) return;
    const d = job.data;
    void this.answerFailure(d, new ServingError('INFERENCE_FAILED', 'the work was lost by its worker too many times')).catch((e: Error) =>
      this.deps.log.warn({ err: e.message, predictionId: d.id }, 'could not record a failure'),
    );
  }

  /**
   * A synchronous job's reply, sent again while Redis is unreachable but not past the job's
   * deadline: after it, the API has answered its requests DEADLINE_EXCEEDED already.
   */
  private sendReply(data: PredictionJobData, reply: SyncReply): Promise<void> {
    return this.deps.replies.send(data.replyTo!, reply, {
      giveUp: () => this.deps.stopping() || (data.deadline !== undefined && Date.now() > data.deadline),
      onUnheard: () =>
        this.deps.log.warn(
          { predictionId: data.id, replyTo: data.replyTo },
          'a synchronous reply reached no API; its requests meet their deadline',
        ),
    });
  }

  /** The final failure of a job: its record for a poller or subscriber, or its reply for a waiting API. */
  private async answerFailure(data: PredictionJobData, err: ServingError): Promise<void> {
    if (data.replyTo)
      return this.sendReply(data, { id: data.id, status: 'FAILED', error: err.toJSON(), queueMs: 0, inferenceMs: 0, batchRows: 0 });
    await this.deps.store.finishDurably(failed(data, err), { giveUp: () => this.deps.stopping() });
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
