/**
 * The OpenTelemetry SDK, wired once when a process starts, the standard way: the trace SDK
 * with a BatchSpanProcessor and an OTLP exporter, configured by the usual `OTEL_*` variables
 * (read here or by the exporter and resource packages themselves), and by `tracing.*` for the
 * two things they do not say: whether to trace at all (off by default; `OTEL_SDK_DISABLED`
 * turns it off too) and the sampling ratio when `OTEL_TRACES_SAMPLER_ARG` is unset.
 *
 * Off, nothing of the SDK is even loaded (the packages are imported here, on demand), no
 * context manager is registered, and core/telemetry/trace.ts's helpers return at once.
 *
 * Read here: OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER (otlp | console | none),
 * OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf, the default,
 * http/json or grpc), OTEL_TRACES_SAMPLER (always_on, always_off, traceidratio,
 * parentbased_always_on, parentbased_always_off, parentbased_traceidratio),
 * OTEL_TRACES_SAMPLER_ARG, OTEL_PROPAGATORS (tracecontext, baggage, none), OTEL_BSP_*
 * (SCHEDULE_DELAY, EXPORT_TIMEOUT, MAX_QUEUE_SIZE, MAX_EXPORT_BATCH_SIZE) and
 * OTEL_SPAN_LINK_COUNT_LIMIT. Read by the OpenTelemetry packages: OTEL_EXPORTER_OTLP_[TRACES_]
 * ENDPOINT, HEADERS, TIMEOUT, COMPRESSION and certificates; OTEL_SERVICE_NAME and
 * OTEL_RESOURCE_ATTRIBUTES.
 *
 * Memory stays bounded when the collector is down: finished spans wait in the
 * BatchSpanProcessor's queue, at most OTEL_BSP_MAX_QUEUE_SIZE (2048) of them, and the ones
 * past it are dropped, never buffered; one export of at most OTEL_BSP_MAX_EXPORT_BATCH_SIZE
 * (512) is in flight at a time, retried with backoff within OTEL_EXPORTER_OTLP_TIMEOUT (10 s).
 * A failed export is reported as a warning (the first at once, then at most one a minute with
 * the count), never to a request.
 */
import { DiagLogLevel, ROOT_CONTEXT, TraceFlags, context, diag, propagation, trace, type TextMapPropagator } from '@opentelemetry/api';
import type { Sampler, SamplingDecision, SpanExporter } from '@opentelemetry/sdk-trace';
import { requestScope, type Logger } from './logger.ts';
import { setTracer } from './trace.ts';

/** The settings of `tracing.*` (core/config.ts documents them). */
export interface TracingSettings {
  enabled: boolean;
  samplingRatio: number;
}

export interface TracingOptions {
  /** Names the default service (`batchline-api`, `batchline-worker`) and a resource attribute. */
  role: 'api' | 'worker';
  pool?: string;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
}

/** What was configured, as logged at start. */
export interface TracingDescription {
  exporter: string;
  protocol?: string;
  sampler: string;
  ratio?: number;
  propagators: string[];
  maxQueueSize: number;
  maxExportBatchSize: number;
}

export interface Tracing {
  description: TracingDescription;
  /** Exports what is queued and stops, within `timeoutMs` whatever the collector does. */
  shutdown(timeoutMs?: number): Promise<void>;
}

const SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const;
const PROTOCOLS = ['http/protobuf', 'http/json', 'grpc'] as const;

const list = (v: string | undefined): string[] =>
  (v ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number, log: Logger): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = Number(raw);
  if (Number.isInteger(n) && n > 0) return n;
  log.warn({ variable: name, value: raw, using: fallback }, `${name} is not a positive integer; ignored`);
  return fallback;
}

/** The sampler OTEL_TRACES_SAMPLER and its argument name, `tracing.samplingRatio` standing in for an unset argument. */
export function samplerSetting(
  env: NodeJS.ProcessEnv,
  samplingRatio: number,
  log: Logger,
): { name: (typeof SAMPLERS)[number]; ratio?: number } {
  const raw = env.OTEL_TRACES_SAMPLER?.trim().toLowerCase();
  let name: (typeof SAMPLERS)[number] = 'parentbased_traceidratio';
  if (raw) {
    if ((SAMPLERS as readonly string[]).includes(raw)) name = raw as (typeof SAMPLERS)[number];
    else log.warn({ variable: 'OTEL_TRACES_SAMPLER', value: raw, using: name }, 'unknown sampler; ignored');
  }
  if (!name.endsWith('traceidratio')) return { name };
  const arg = env.OTEL_TRACES_SAMPLER_ARG?.trim();
  let ratio = samplingRatio;
  if (arg) {
    const n = Number(arg);
    if (Number.isFinite(n) && n >= 0 && n <= 1) ratio = n;
    else log.warn({ variable: 'OTEL_TRACES_SAMPLER_ARG', value: arg, using: ratio }, 'not a ratio from 0 to 1; ignored');
  }
  return { name, ratio };
}

/**
 * The parent-based samplers' choice for a span without a parent. A root that follows from a
 * sampled span (a rollout's mirrored run, linked to the request it mirrors: trace.ts,
 * startLinkedSpan) is sampled as a child of it would be; every other root is `root`'s to decide.
 */
function followingLinks(root: Sampler, sampled: SamplingDecision): Sampler {
  return {
    shouldSample(ctx, traceId, name, kind, attributes, links) {
      if (links.some((l) => (l.context.traceFlags & TraceFlags.SAMPLED) !== 0)) return { decision: sampled };
      return root.shouldSample(ctx, traceId, name, kind, attributes, links);
    },
    toString: () => `FollowingLinks{${root.toString()}}`,
  };
}

async function buildSampler(setting: { name: string; ratio?: number }): Promise<Sampler> {
  const { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, SamplingDecision, TraceIdRatioBasedSampler } =
    await import('@opentelemetry/sdk-trace');
  const root = setting.name.endsWith('always_on')
    ? new AlwaysOnSampler()
    : setting.name.endsWith('always_off')
      ? new AlwaysOffSampler()
      : new TraceIdRatioBasedSampler(setting.ratio ?? 1);
  if (!setting.name.startsWith('parentbased_')) return root;
  return new ParentBasedSampler({ root: followingLinks(root, SamplingDecision.RECORD_AND_SAMPLED) });
}

async function buildExporter(name: string, protocol: string): Promise<SpanExporter | undefined> {
  if (name === 'none') return undefined;
  if (name === 'console') return new (await import('@opentelemetry/sdk-trace')).ConsoleSpanExporter();
  if (protocol === 'http/json') return new (await import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter();
  if (protocol === 'grpc') return new (await import('@opentelemetry/exporter-trace-otlp-grpc')).OTLPTraceExporter();
  return new (await import('@opentelemetry/exporter-trace-otlp-proto')).OTLPTraceExporter();
}

/** How often a collector that keeps failing is reported: the first failure at once, then a count per period. */
const EXPORT_FAILURE_LOG_MS = 60_000;

/**
 * The SDK's own messages go to our logger: its warnings (spans dropped past the queue) as
 * warnings, its chatter at debug, and failed exports (a collector down) as one warning at
 * first and then one a minute with the count. Outside any request's context: an export runs
 * on a timer a request happened to start, and its lines are not that request's.
 */
function routeDiagnostics(log: Logger, setGlobalErrorHandler: (handler: (e: unknown) => void) => void): void {
  const child = log.child({ component: 'opentelemetry' });
  const quiet = (fn: () => void): void => context.with(ROOT_CONTEXT, () => requestScope.exit(fn));
  const line =
    (level: 'warn' | 'debug' | 'trace') =>
    (msg: string, ...args: unknown[]): void =>
      quiet(() => child[level](args.length ? { args: args.map(String) } : {}, msg));
  diag.setLogger(
    { error: line('warn'), warn: line('warn'), info: line('debug'), debug: line('debug'), verbose: line('trace') },
    { logLevel: DiagLogLevel.INFO, suppressOverrideMessage: true },
  );
  let failed = 0;
  let reportedAt = -Infinity;
  setGlobalErrorHandler((e) => {
    failed++;
    const now = Date.now();
    if (now - reportedAt < EXPORT_FAILURE_LOG_MS) return;
    reportedAt = now;
    const err = e instanceof Error ? e.message : typeof e === 'string' ? e : JSON.stringify(e);
    quiet(() =>
      child.warn({ err, failures: failed }, `span export failed; the spans of that export are dropped (next report in a minute at most)`),
    );
    failed = 0;
  });
}

/** Starts the SDK when `tracing.enabled` says so (and OTEL_SDK_DISABLED does not); undefined when off. */
export async function startTracing(settings: TracingSettings, options: TracingOptions): Promise<Tracing | undefined> {
  const env = options.env ?? process.env;
  const log = options.logger;
  if (!settings.enabled || env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return undefined;

  const [{ TracerProvider, BatchSpanProcessor }, { AsyncLocalStorageContextManager }, core, resources] = await Promise.all([
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/resources'),
  ]);
  routeDiagnostics(log, core.setGlobalErrorHandler);

  const exporters = list(env.OTEL_TRACES_EXPORTER);
  let exporterName = exporters[0] ?? 'otlp';
  if (!['otlp', 'console', 'none'].includes(exporterName)) {
    log.warn({ variable: 'OTEL_TRACES_EXPORTER', value: exporterName, using: 'otlp' }, 'unsupported exporter; using otlp');
    exporterName = 'otlp';
  }
  if (exporters.length > 1) log.warn({ variable: 'OTEL_TRACES_EXPORTER', using: exporterName }, 'one exporter is used: the first');
  const rawProtocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? '').trim().toLowerCase();
  let protocol: string = 'http/protobuf';
  if (rawProtocol) {
    if ((PROTOCOLS as readonly string[]).includes(rawProtocol)) protocol = rawProtocol;
    else log.warn({ variable: 'OTEL_EXPORTER_OTLP_PROTOCOL', value: rawProtocol, using: protocol }, 'unknown protocol; ignored');
  }
  const exporter = await buildExporter(exporterName, protocol);
  const samplerSet = samplerSetting(env, settings.samplingRatio, log);

  const maxQueueSize = positiveInt(env, 'OTEL_BSP_MAX_QUEUE_SIZE', 2048, log);
  const maxExportBatchSize = Math.min(maxQueueSize, positiveInt(env, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 512, log));
  const processor = exporter
    ? new BatchSpanProcessor({
        exporter,
        maxQueueSize,
        maxExportBatchSize,
        scheduledDelayMillis: positiveInt(env, 'OTEL_BSP_SCHEDULE_DELAY', 5000, log),
        exportTimeoutMillis: positiveInt(env, 'OTEL_BSP_EXPORT_TIMEOUT', 30_000, log),
      })
    : undefined;

  // Our defaults first; OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win over them.
  const detected = resources.detectResources({ detectors: [resources.envDetector] });
  const resource = resources
    .resourceFromAttributes({
      'service.name': `batchline-${options.role}`,
      'service.namespace': 'batchline',
      'batchline.role': options.role,
      ...(options.pool ? { [`batchline.pool`]: options.pool } : {}),
    })
    .merge(detected);

  const provider = new TracerProvider({
    resource,
    sampler: await buildSampler(samplerSet),
    spanProcessors: processor ? [processor] : [],
    spanLimits: { linkCountLimit: positiveInt(env, 'OTEL_SPAN_LINK_COUNT_LIMIT', 128, log) },
  });

  const names = list(env.OTEL_PROPAGATORS ?? 'tracecontext,baggage');
  const propagators: TextMapPropagator[] = [];
  for (const name of names) {
    if (name === 'tracecontext') propagators.push(new core.W3CTraceContextPropagator());
    else if (name === 'baggage') propagators.push(new core.W3CBaggagePropagator());
    else if (name !== 'none') log.warn({ variable: 'OTEL_PROPAGATORS', value: name }, 'unsupported propagator; ignored');
  }
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new core.CompositePropagator({ propagators }));
  trace.setGlobalTracerProvider(provider);
  setTracer(provider.getTracer('batchline'), samplerSet.name.startsWith('parentbased_'));

  const description: TracingDescription = {
    exporter: exporterName,
    ...(exporter && exporterName === 'otlp' ? { protocol } : {}),
    sampler: samplerSet.name,
    ...(samplerSet.ratio !== undefined ? { ratio: samplerSet.ratio } : {}),
    propagators: names,
    maxQueueSize,
    maxExportBatchSize,
  };
  log.info({ tracing: description }, 'tracing on');
  return {
    description,
    async shutdown(timeoutMs = 2000) {
      setTracer(undefined);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), timeoutMs)));
      const done = await Promise.race([
        provider.shutdown().then(
          () => 'done' as const,
          () => 'failed' as const,
        ),
        late,
      ]);
      clearTimeout(timer);
      if (done !== 'done')
        log.warn(
          { timeoutMs },
          `spans not exported at shutdown (${done === 'late' ? 'the collector did not answer in time' : 'export failed'})`,
        );
    },
  };
}
