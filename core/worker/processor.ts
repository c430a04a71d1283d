/**
 * What a worker does with one BullMQ job: drop it when its deadline has passed, run its rows
 * through the batcher, answer each request of an edge batch its own share (a synchronous job
 * by a reply to the waiting API, an asynchronous one by its durable record), and decide on
 * failure whether BullMQ retries it or this was the last attempt. An asynchronous job's parts
 * (coalesced submissions) are read together when it is taken, so parts answered already
 * (cancelled, or by an earlier run of the job) are not run again and parts past their own
 * deadline are answered DEADLINE_EXCEEDED without running; the rest are finished together. Nothing here starts or
 * stops a process: workers/prediction-worker.ts owns the lifecycle.
 */
import { UnrecoverableError, type Job } from 'bullmq';
import { ServingError } from '../errors/registry.ts';
import type { ModelVersion } from '../models/repository.ts';
import { nonFiniteOutput, rowPredictions } from '../runtime/postprocess.ts';
import { encodeRows } from '../tensor/codec.ts';
import type { TensorValue } from '../tensor/tensor.ts';
import type { Batcher } from '../batching/batcher.ts';
import type { ModelConfig } from '../models/config.ts';
import { fromWire } from '../prediction/input.ts';
import { selectRows } from '../batching/merge.ts';
import { whileUnreachable } from '../redis/connection.ts';
import type { ResultStore } from '../prediction/result-store.ts';
import type { ReplyPublisher } from '../prediction/result-feed.ts';
import { observeLatency, type Metrics } from '../telemetry/metrics.ts';
import type { DriftCounter } from '../drift/monitor.ts';
import type { Logger } from '../telemetry/logger.ts';
import {
  isFinal,
  jobParts,
  modelKey,
  partAccepted,
  type JobPart,
  type PredictionJobData,
  type PredictionRecord,
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
  /** A coalesced asynchronous job was taken: its parts beyond the first stop counting against `queue.maxDepth`. */
  taken?: (job: Job<PredictionJobData>) => Promise<void>;
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
    const { models, batcher, metrics } = this.deps;
    const data = job.data;
    const log = this.deps.log.child({ requestId: data.requestId, predictionId: data.id, model: data.model, attempt: job.attemptsMade + 1 });
    const key = modelKey(data.model, data.version);
    const startedAt = Date.now();
    if (!data.replyTo) return this.runParts(job, log, startedAt, spans);

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
      const queueMs = startedAt - data.enqueuedAt;
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
      const { err, final } = failureOf(job, e);
      metrics.jobs.inc({ model: data.model, outcome: err.code });
      log.warn({ code: err.code, err: err.message, final }, 'prediction failed');
      if (final) {
        // The client sees the code and a message, never the runtime's own text (paths, internals).
        await this.answerFailure(data, clientFacing(err));
        throw new UnrecoverableError(err.message);
      }
      throw err;
    }
  }

  /**
   * An asynchronous job: its parts' records are read together when it is taken. A part
   * answered already (cancelled, or by an earlier run of this job) is not run again; a part
   * past its own deadline is answered DEADLINE_EXCEEDED and not run; the others run as one
   * inference, and every answer of the job is written and published in one script, each
   * only if its prediction is not final yet (so a run after a crash answers nothing twice).
   */
  private async runParts(job: Job<PredictionJobData>, log: Logger, startedAt: number, spans?: JobSpans): Promise<{ status: string }> {
    const { models, batcher, store, metrics } = this.deps;
    const data = job.data;
    const key = modelKey(data.model, data.version);
    const parts = jobParts(data);
    const retry = {
      giveUp: () => this.deps.stopping(),
      onRetry: (e: Error) =>
        log.warn({ err: e.message }, 'Redis unreachable: holding the answers and writing them again until Redis is back'),
    };
    const [records] = await Promise.all([
      whileUnreachable(() => store.getMany(parts.map((p) => p.id)), retry),
      parts.length > 1
        ? this.deps.taken?.(job).catch((e: Error) => log.warn({ err: e.message }, 'could not release the queue depth of a job'))
        : undefined,
    ]);
    const answers: PredictionRecord[] = [];
    const live: { part: JobPart; start: number; base: PredictionRecord }[] = [];
    let start = 0;
    let answeredBefore = 0;
    parts.forEach((part, i) => {
      const at = start;
      start += part.rows;
      const rec = records[i];
      if (rec && isFinal(rec.status)) {
        answeredBefore++;
        return;
      }
      const base = rec ?? partAccepted(data, part, data.trace?.parts?.[i] ?? undefined);
      if (part.deadline !== undefined && startedAt > part.deadline) {
        answers.push(failure(base, new ServingError('DEADLINE_EXCEEDED', 'the deadline passed before the work started')));
      } else live.push({ part, start: at, base });
    });
    if (answeredBefore) log.info({ parts: parts.length, answeredBefore }, 'parts answered already; not running them again');
    if (answers.length) log.info({ parts: answers.length }, 'deadline passed in the queue; dropped');
    if (live.length === 0) {
      await store.finishManyDurably(answers, retry);
      return { status: answers.length ? 'FAILED' : 'COMPLETED' };
    }
    try {
      const coldStartMs = (await this.deps.coldStart?.(key)) ?? 0;
      recordColdLoad(spans?.context, data.model, coldStartMs);
      const model = models.get(key);
      if (!model) throw new ServingError('MODEL_NOT_READY', `this worker does not serve ${key}`);
      const whole = fromWire(data.input);
      const input =
        live.length === parts.length
          ? whole
          : selectRows(
              whole,
              live.map((l) => ({ start: l.start, rows: l.part.rows })),
            );
      const rows = live.reduce((sum, l) => sum + l.part.rows, 0);
      const deadlines = live.map((l) => l.part.deadline);
      const deadlineMs = deadlines.every((d) => d !== undefined) ? Math.max(...deadlines) - Date.now() : undefined;
      const outcome = await batcher.submit(key, input, rows, deadlineMs, spans?.item);
      const shares = answerParts(
        model.config,
        outcome.outputs,
        live.map((l) => l.part.rows),
      );
      const finishedAt = Date.now();
      const queueMs = startedAt - data.enqueuedAt;
      live.forEach((l, i) => {
        const share = shares[i];
        if (share.error) {
          answers.push({ ...l.base, status: 'FAILED', finishedAt, error: share.error });
          return;
        }
        const result: PredictionResult = {
          id: l.part.id,
          model: data.model,
          version: data.version,
          predictions: share.predictions,
          outputs: share.outputs,
          timings: {
            queueMs,
            batchWaitMs: outcome.batchWaitMs,
            batchRows: outcome.batchRows,
            coldStartMs,
            inferenceMs: outcome.inferenceMs,
            totalMs: finishedAt - l.part.submittedAt,
          },
          cached: false,
          batchRows: outcome.batchRows,
        };
        answers.push({ ...l.base, status: 'COMPLETED', finishedAt, result });
      });
      const written = await inSpan(
        spans?.context,
        `finish ${data.model}`,
        { attributes: { [ATTR.predictionId]: data.id, [ATTR.requests]: answers.length } },
        () => store.finishManyDurably(answers, retry),
      );
      const again = written.filter((w) => !w).length;
      if (again) log.info({ parts: again }, 'already answered; not answering again');
      metrics.jobs.inc({ model: data.model, outcome: 'ok' });
      if (model.config.task === 'classification')
        this.deps.drift?.add(
          key,
          shares.flatMap((p) => (p.error ? [] : p.predictions.map((r) => r.label))),
        );
      observeLatency(metrics.latency, { model: data.model, phase: 'queue' }, queueMs / 1000);
      observeLatency(metrics.latency, { model: data.model, phase: 'inference' }, outcome.inferenceMs / 1000);
      log.debug({ batchRows: outcome.batchRows, inferenceMs: outcome.inferenceMs, segments: live.length }, 'predicted');
      return { status: 'COMPLETED' };
    } catch (e) {
      const { err, final } = failureOf(job, e);
      metrics.jobs.inc({ model: data.model, outcome: err.code });
      log.warn({ code: err.code, err: err.message, final }, 'prediction failed');
      // The client sees the code and a message, never the runtime's own text (paths, internals).
      if (final) for (const l of live) answers.push(failure(l.base, clientFacing(err)));
      // Parts dropped at their deadline are answered even when the rest is tried again.
      await store.finishManyDurably(answers, retry);
      throw final ? new UnrecoverableError(err.message) : err;
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

  /**
   * The final failure of a job: its parts' records for pollers and subscribers (those not
   * final yet), or its reply for a waiting API.
   */
  private async answerFailure(data: PredictionJobData, err: ServingError): Promise<void> {
    if (data.replyTo)
      return this.sendReply(data, { id: data.id, status: 'FAILED', error: err.toJSON(), queueMs: 0, inferenceMs: 0, batchRows: 0 });
    const records = jobParts(data).map((p, i) => failure(partAccepted(data, p, data.trace?.parts?.[i] ?? undefined), err));
    await this.deps.store.finishManyDurably(records, { giveUp: () => this.deps.stopping() });
  }
}

/** What failed, and whether it is the job's last attempt: the input decides some errors, so running it again gives the same answer. */
function failureOf(job: Job<PredictionJobData>, e: unknown): { err: ServingError; final: boolean } {
  const err = e instanceof ServingError ? e : new ServingError('INFERENCE_FAILED', (e as Error).message);
  // The input decides these: running it again gives the same answer. So do these of the version
  // (its size, its file): every worker of the pool would refuse it the same way.
  const final =
    err.code === 'BAD_USER_INPUT' ||
    err.code === 'NON_FINITE_OUTPUT' ||
    err.code === 'MODEL_TOO_LARGE' ||
    err.code === 'MODEL_LOAD_FAILED' ||
    job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
  return { err, final };
}

/** The error as the client sees it: the code and a message, never the runtime's own text. */
function clientFacing(err: ServingError): ServingError {
  return err.code === 'INFERENCE_FAILED' ? new ServingError('INFERENCE_FAILED', 'the model failed to run on this input') : err;
}

/** A prediction's final failure record. */
function failure(base: PredictionRecord, err: ServingError, finishedAt = Date.now()): PredictionRecord {
  return { ...base, status: 'FAILED', finishedAt, error: err.toJSON() };
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
