/**
 * Tracing as the serving code sees it: OpenTelemetry's API and nothing else (the SDK is wired
 * once at start, core/telemetry/tracing.ts). Off by default, and then every helper here
 * returns at once: no span, no context lookup, no carrier in a job, so the hot path pays one
 * branch. On, a prediction is one trace across the API, the queue and a worker:
 *
 *   POST /graphql (server) > predict <model> > edge batch <model> > send <queue> (producer)
 *     > queued <queue>, process <queue> (consumer, in the worker) > inference batch <model>
 *     > [load <model>] > onnxruntime run <model>; process > reply | finish
 *
 * A batch serves many requests and a span has one parent, so a batch span is the child of
 * its first sampled member and *links* to every member (as OpenTelemetry's messaging
 * conventions do for batch receives); each member's own span links back to it. A job
 * carries its own context (`job`) and one per part (`parts`, aligned with its segments), so
 * every request of a shared job keeps its trace.
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  context,
  propagation,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
  type TimeInput,
  type Tracer,
} from '@opentelemetry/api';

export { ROOT_CONTEXT, SpanKind, type Context, type Span, type SpanContext };

/** A W3C trace context as it travels in a job, a record or a reply: `traceparent` and, when set, `tracestate`. */
export interface TraceCarrier {
  traceparent: string;
  tracestate?: string;
}

/** What a job carries: the context its consumer continues (`job`), and each part's own request (`parts`). */
export interface JobTrace {
  job?: TraceCarrier;
  /** One per part of the job (an edge batch's requests, in segment order); null where a part has none. */
  parts?: (TraceCarrier | null)[];
}

/**
 * Attribute names. OpenTelemetry's where a convention exists (messaging and GraphQL are still
 * in development there, so their names are spelt out here rather than imported from the
 * incubating entry point), `batchline.*` otherwise.
 */
export const ATTR = {
  messagingSystem: 'messaging.system',
  messagingOperationType: 'messaging.operation.type',
  messagingOperationName: 'messaging.operation.name',
  messagingDestination: 'messaging.destination.name',
  messagingMessageId: 'messaging.message.id',
  messagingBatchCount: 'messaging.batch.message_count',
  graphqlOperationType: 'graphql.operation.type',
  graphqlOperationName: 'graphql.operation.name',
  errorType: 'error.type',
  model: 'batchline.model',
  version: 'batchline.version',
  pool: 'batchline.pool',
  priority: 'batchline.priority',
  cached: 'batchline.cached',
  rows: 'batchline.rows',
  requests: 'batchline.requests',
  requestId: 'batchline.request_id',
  predictionId: 'batchline.prediction.id',
  closeReason: 'batchline.batch.close_reason',
  policy: 'batchline.batch.policy',
  limit: 'batchline.batch.limit',
  edgeReason: 'batchline.edge.reason',
  attempt: 'batchline.attempt',
  mirrorKind: 'batchline.mirror.kind',
  mirrorOutcome: 'batchline.mirror.outcome',
  agreedRows: 'batchline.mirror.agreed_rows',
} as const;

let tracer: Tracer | undefined;
/** Whether a child follows its parent's sampling decision (the parent-based samplers, the default). */
let parentBased = true;

/**
 * Called by core/telemetry/tracing.ts once the SDK is registered (and with undefined when it
 * shuts down). `followsParent`: the sampler is parent-based, so no span is even started under
 * a parent that was not sampled (at a ratio of 0.01, 99 requests in 100 pay for their root's
 * sampling decision and nothing else).
 */
export function setTracer(t: Tracer | undefined, followsParent = true): void {
  tracer = t;
  parentBased = followsParent;
}

/** True when tracing is on in this process. */
export function tracingOn(): boolean {
  return tracer !== undefined;
}

/** The active span, when tracing is on and one is active. */
export function activeSpan(): Span | undefined {
  return tracer && trace.getSpan(context.active());
}

/** Renames the active span (a request's, once its model is known) and adds attributes, if it is recorded. */
export function nameActiveSpan(name: string, attributes?: Attributes): void {
  const span = activeSpan();
  if (!span?.isRecording()) return;
  span.updateName(name);
  if (attributes) span.setAttributes(attributes);
}

/**
 * The trace id of the active span when tracing is on, sampled or not: the one the caller got
 * back in its `traceparent` (its own trace's when it sent one). Undefined otherwise.
 */
export function activeTraceId(): string | undefined {
  const sc = tracer && trace.getSpanContext(context.active());
  return sc && trace.isSpanContextValid(sc) ? sc.traceId : undefined;
}

/** The active context, when tracing is on. */
export function activeContext(): Context | undefined {
  return tracer && context.active();
}

export interface SpanOptions {
  kind?: SpanKind;
  attributes?: Attributes;
  links?: Link[];
  /** The parent; the active context when absent. */
  parent?: Context;
  startTime?: TimeInput;
}

/** Whether a span started under `parent` could be recorded: not when a parent-based sampler would drop it anyway. */
function mayRecordUnder(parent: Context): boolean {
  if (!parentBased) return true;
  const sc = trace.getSpanContext(parent);
  return sc === undefined || (sc.traceFlags & TraceFlags.SAMPLED) !== 0;
}

/**
 * A span, or undefined when tracing is off or the span would not be recorded (its parent was
 * not sampled). Attributes are set once the span is known to be recorded: the SDK would
 * otherwise validate and copy them for spans that go nowhere.
 */
export function startSpan(name: string, options: SpanOptions = {}): Span | undefined {
  if (!tracer) return undefined;
  const parent = options.parent ?? context.active();
  if (!mayRecordUnder(parent)) return undefined;
  const span = tracer.startSpan(name, { kind: options.kind, links: options.links, startTime: options.startTime }, parent);
  if (!span.isRecording()) return undefined;
  if (options.attributes) span.setAttributes(options.attributes);
  return span;
}

/** Runs `fn` with `span` active (log lines and child spans see it); just runs it without one. */
export function withSpan<T>(span: Span | undefined, fn: () => T): T {
  if (!span) return fn();
  return context.with(trace.setSpan(context.active(), span), fn);
}

/** Runs `fn` in `ctx`; just runs it without one. */
export function withContext<T>(ctx: Context | undefined, fn: () => T): T {
  return ctx ? context.with(ctx, fn) : fn();
}

/** Runs `fn` outside any trace (when tracing is on): work not traced must not log or parent under a context it happened to inherit. */
export function untraced<T>(fn: () => T): T {
  return tracer ? context.with(ROOT_CONTEXT, fn) : fn();
}

/** The context of a span, as a parent for spans started elsewhere. */
export function contextWith(span: Span | undefined, parent: Context | undefined = activeContext()): Context | undefined {
  return span && trace.setSpan(parent ?? ROOT_CONTEXT, span);
}

/** Ends a span, marking it failed with the error's code (a ServingError's) when there is one. */
export function endSpan(span: Span | undefined, error?: unknown, endTime?: TimeInput): void {
  if (!span) return;
  if (error !== undefined) {
    const code = (error as { code?: unknown }).code;
    span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
    span.setAttribute(ATTR.errorType, typeof code === 'string' ? code : ((error as Error).name ?? 'Error'));
  }
  span.end(endTime);
}

/**
 * Runs `fn` in a new span under `parent`, ended when it settles (failed with its error); just
 * runs it without a parent or when nothing is recorded. The parent is explicit: work that runs
 * on a timer or a callback may find any request's context active.
 */
export async function inSpan<T>(
  parent: Context | undefined,
  name: string,
  options: Omit<SpanOptions, 'parent'>,
  fn: (span: Span | undefined) => Promise<T>,
): Promise<T> {
  const span = parent && startSpan(name, { ...options, parent });
  if (!span) return fn(undefined);
  try {
    const out = await withSpan(span, () => fn(span));
    span.end();
    return out;
  } catch (e) {
    endSpan(span, e);
    throw e;
  }
}

/** W3C `traceparent` of a span context: version 00, as the W3C propagator writes it. */
function traceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-0${(sc.traceFlags & TraceFlags.SAMPLED) !== 0 ? 1 : 0}`;
}

/**
 * The carrier of a context's span, for a job or a record: only a sampled one (an unsampled
 * request leaves nothing in its job, and its worker records nothing either).
 */
export function carrierOf(ctx: Context | undefined = activeContext()): TraceCarrier | undefined {
  const sc = tracer && ctx && trace.getSpanContext(ctx);
  if (!sc || (sc.traceFlags & TraceFlags.SAMPLED) === 0) return undefined;
  const state = sc.traceState?.serialize();
  return state ? { traceparent: traceparent(sc), tracestate: state } : { traceparent: traceparent(sc) };
}

/** The carrier of a span. */
export function carrierOfSpan(span: Span | undefined): TraceCarrier | undefined {
  return span && carrierOf(trace.setSpan(ROOT_CONTEXT, span));
}

/** The remote context a carrier names (a parent for spans here), or undefined. */
export function contextOf(carrier: TraceCarrier | null | undefined): Context | undefined {
  if (!tracer || !carrier?.traceparent) return undefined;
  const ctx = propagation.extract(ROOT_CONTEXT, carrier);
  return trace.getSpanContext(ctx) ? ctx : undefined;
}

/** The span context a carrier names, for a link. */
export function spanContextOf(carrier: TraceCarrier | null | undefined): SpanContext | undefined {
  const ctx = contextOf(carrier);
  return ctx && trace.getSpanContext(ctx);
}

/** The span context of a context, for a link. */
export function spanContextIn(ctx: Context | undefined): SpanContext | undefined {
  return ctx && trace.getSpanContext(ctx);
}

/** Whether a context holds a sampled span (a batch's parent is its first sampled member). */
export function isSampled(ctx: Context | undefined): boolean {
  const sc = ctx && trace.getSpanContext(ctx);
  return sc !== undefined && (sc.traceFlags & TraceFlags.SAMPLED) !== 0;
}

/** Links to each sampled context's span, skipping the others (a link to an unrecorded span leads nowhere). */
export function linksTo(contexts: readonly (SpanContext | undefined)[]): Link[] {
  const links: Link[] = [];
  for (const c of contexts) if (c && (c.traceFlags & TraceFlags.SAMPLED) !== 0) links.push({ context: c });
  return links;
}

/** `trace_id` and `span_id` of the active sampled span, for log lines; undefined otherwise. */
export function logIds(): { trace_id: string; span_id: string } | undefined {
  if (!tracer) return undefined;
  const sc = trace.getSpanContext(context.active());
  return sc && (sc.traceFlags & TraceFlags.SAMPLED) !== 0 ? { trace_id: sc.traceId, span_id: sc.spanId } : undefined;
}

/** A latency exemplar's labels: the active sampled span's ids (the only ones a trace backend will have). */
export const exemplarLabels = logIds;

/** The `traceparent` of a span, for a response header (sampled or not: the caller learns the decision). */
export function traceparentOf(span: Span | undefined): string | undefined {
  return span && traceparent(span.spanContext());
}

/**
 * A transport's door (GraphQL over HTTP, SSE, WebSocket, and the Open Inference Protocol's
 * REST and gRPC): a server span continuing the caller's W3C context (`traceparent`,
 * `tracestate` from its headers or metadata), or undefined when tracing is off. The span is
 * returned even when it is not sampled, so that its `traceparent` goes back to the caller:
 * run the request inside `contextWith(span, parent)` and send `traceparentOf(span)` back.
 * Attributes are set only on a recorded span.
 */
export function startServerSpan(
  name: string,
  getHeader: (name: 'traceparent' | 'tracestate') => string | undefined,
  attributes?: Attributes,
): { span: Span; parent: Context } | undefined {
  if (!tracer) return undefined;
  const traceparent = getHeader('traceparent');
  const tracestate = getHeader('tracestate');
  const parent = traceparent ? propagation.extract(ROOT_CONTEXT, { traceparent, ...(tracestate ? { tracestate } : {}) }) : ROOT_CONTEXT;
  const span = tracer.startSpan(name, { kind: SpanKind.SERVER }, parent);
  if (attributes && span.isRecording()) span.setAttributes(attributes);
  return { span, parent };
}

/**
 * A span for a batch that serves many members: the child of the first sampled member (so a
 * lone request's trace holds its whole path), linking to `links` (every sampled request it
 * serves); each other sampled member's own span links back to it, so every member's trace
 * leads to the batch. Undefined when tracing is off or no member is sampled.
 */
export function startBatchSpan(
  name: string,
  members: readonly (Context | undefined)[],
  links: readonly (SpanContext | undefined)[],
  options: Omit<SpanOptions, 'parent' | 'links'> = {},
): Span | undefined {
  if (!tracer) return undefined;
  const parent = members.find(isSampled);
  if (!parent) return undefined;
  const span = startSpan(name, { ...options, parent, links: linksTo(links) });
  if (!span) return undefined;
  const own = trace.getSpan(parent);
  for (const m of members) {
    const s = m && trace.getSpan(m);
    if (s && s !== own && s.isRecording()) s.addLink({ context: span.spanContext() });
  }
  return span;
}

/**
 * A span for work done on a request's behalf but apart from its answer (a rollout's mirrored
 * run): the root of a trace of its own, *linked* to the active request's span, so that the
 * request's trace does not grow by work its client never waited for. Started only when that
 * request is sampled; the sampler follows the link (core/telemetry/tracing.ts), so the linked
 * trace is recorded whenever the request's is. Undefined otherwise, or when tracing is off.
 * Run the work in `contextWith(span, ROOT_CONTEXT)`, and without a span in `untraced`.
 */
export function startLinkedSpan(name: string, options: Omit<SpanOptions, 'parent' | 'links'> = {}): Span | undefined {
  if (!tracer) return undefined;
  const from = trace.getSpanContext(context.active());
  if (!from || (from.traceFlags & TraceFlags.SAMPLED) === 0) return undefined;
  return startSpan(name, { ...options, parent: ROOT_CONTEXT, links: [{ context: from }] });
}

/**
 * The cold-load hook: a span for the time a job waited while its model loaded into the
 * worker (on-demand loading), under the job's span. `endTime` defaults to now.
 */
export function recordColdLoad(parent: Context | undefined, model: string, waitedMs: number, endTime: number = Date.now()): void {
  if (!parent || waitedMs <= 0) return;
  startSpan(`load ${model}`, { parent, startTime: endTime - waitedMs, attributes: { [ATTR.model]: model } })?.end(endTime);
}
