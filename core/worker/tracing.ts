/**
 * A worker's spans (core/telemetry/trace.ts says how they fit the whole): per job, its time in
 * the queue and its processing, continuing the context the job carries; per inference batch,
 * one span linking to every request it serves, and the onnxruntime run under it. A job that
 * carries no context (its API does not trace) gets no spans: traces start at the API.
 */
import type { Job } from 'bullmq';
import type { BatchRunMeta } from '../batching/batcher.ts';
import type { RunResult } from '../runtime/inference-pool.ts';
import type { PredictionJobData } from '../prediction/record.ts';
import {
  ATTR,
  SpanKind,
  contextOf,
  contextWith,
  endSpan,
  spanContextOf,
  startBatchSpan,
  startSpan,
  tracingOn,
  withSpan,
  type Context,
  type Span,
  type SpanContext,
} from '../telemetry/trace.ts';

/** What a job hands the batcher: the context its batch span may be parented by, and its requests' contexts to link. */
export interface BatchItemTrace {
  parent: Context;
  links: (SpanContext | undefined)[];
}

export interface JobSpans {
  /** The job's `process` span and its context, active while the job is processed. */
  span: Span;
  context: Context;
  item: BatchItemTrace;
}

/** `queued <queue>` (enqueue to pick-up) and `process <queue>` (from pick-up), under the job's context. */
export function startJobSpans(job: Job<PredictionJobData>, pickedUpAt: number): JobSpans | undefined {
  if (!tracingOn()) return undefined;
  const data = job.data;
  const parent = contextOf(data.trace?.job);
  if (!parent) return undefined;
  const messaging = {
    [ATTR.messagingSystem]: 'bullmq',
    [ATTR.messagingDestination]: job.queueName,
    [ATTR.messagingMessageId]: data.id,
  };
  startSpan(`queued ${job.queueName}`, {
    parent,
    startTime: data.enqueuedAt,
    attributes: { ...messaging, [ATTR.pool]: data.pool },
  })?.end(pickedUpAt);
  const span = startSpan(`process ${job.queueName}`, {
    parent,
    kind: SpanKind.CONSUMER,
    startTime: pickedUpAt,
    attributes: {
      ...messaging,
      [ATTR.messagingOperationType]: 'process',
      [ATTR.messagingOperationName]: 'process',
      [ATTR.model]: data.model,
      [ATTR.version]: data.version,
      [ATTR.rows]: data.rows,
      [ATTR.requests]: data.segments?.length ?? 1,
      [ATTR.attempt]: job.attemptsMade + 1,
      [ATTR.requestId]: data.requestId,
    },
  });
  if (!span) return undefined;
  const context = contextWith(span, parent)!;
  return { span, context, item: { parent: context, links: (data.trace?.parts ?? []).map(spanContextOf) } };
}

/**
 * One inference batch: `inference batch <model>` from its oldest request's arrival in the
 * batcher to the end of its run, the child of its first sampled job and linked to every
 * request of every job in it; `onnxruntime run <model>` under it, timed by the inference
 * thread's own clock (the run, not the hand-over to the thread).
 */
export async function traceInferenceBatch(key: string, meta: BatchRunMeta, run: () => Promise<RunResult>): Promise<RunResult> {
  if (!tracingOn()) return run();
  const [model, version] = key.split('@');
  const items = meta.traces as (BatchItemTrace | undefined)[];
  const links = items.flatMap((i) => i?.links ?? []);
  const span = startBatchSpan(
    `inference batch ${model}`,
    items.map((i) => i?.parent),
    links,
    {
      startTime: Date.now() - meta.gatheredMs,
      attributes: {
        [ATTR.model]: model,
        [ATTR.version]: version,
        [ATTR.rows]: meta.rows,
        [ATTR.requests]: links.length,
        [ATTR.messagingBatchCount]: items.length,
        [ATTR.closeReason]: meta.reason,
        [ATTR.policy]: meta.policy,
        [ATTR.limit]: meta.limit,
      },
    },
  );
  if (!span) return run();
  try {
    const result = await withSpan(span, run);
    const end = Date.now();
    startSpan(`onnxruntime run ${model}`, {
      parent: contextWith(span),
      startTime: end - result.inferenceMs,
      attributes: { [ATTR.model]: model, [ATTR.rows]: result.rows },
    })?.end(end);
    span.end(end);
    return result;
  } catch (e) {
    endSpan(span, e);
    throw e;
  }
}
