/**
 * How tracing reads its configuration (the standard OTEL_* variables, then `tracing.*`), and
 * which exposition a scraper gets. The spans themselves are test/functional/tracing.test.ts's.
 */
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { samplerSetting, startTracing } from '../../../core/telemetry/tracing.ts';
import { ROOT_CONTEXT, contextWith, startLinkedSpan, startServerSpan, tracingOn, withContext } from '../../../core/telemetry/trace.ts';
import { prefersOpenMetrics } from '../../../core/telemetry/metrics.ts';

/** A logger that keeps its lines. */
function recording() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

describe('sampler settings', () => {
  it('defaults to parent-based trace-id ratio at tracing.samplingRatio', () => {
    const { logger } = recording();
    expect(samplerSetting({}, 0.25, logger)).toEqual({ name: 'parentbased_traceidratio', ratio: 0.25 });
  });

  it('takes OTEL_TRACES_SAMPLER and its argument over tracing.samplingRatio', () => {
    const { logger } = recording();
    expect(samplerSetting({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.01' }, 1, logger)).toEqual({
      name: 'traceidratio',
      ratio: 0.01,
    });
    expect(samplerSetting({ OTEL_TRACES_SAMPLER: 'ALWAYS_OFF' }, 1, logger)).toEqual({ name: 'always_off' });
  });

  it('warns about and ignores what it does not know, as the specification asks', () => {
    const { logger, lines } = recording();
    expect(samplerSetting({ OTEL_TRACES_SAMPLER: 'jaeger_remote', OTEL_TRACES_SAMPLER_ARG: '2' }, 0.5, logger)).toEqual({
      name: 'parentbased_traceidratio',
      ratio: 0.5,
    });
    expect(lines.map((l) => l.variable)).toEqual(['OTEL_TRACES_SAMPLER', 'OTEL_TRACES_SAMPLER_ARG']);
  });
});

describe('starting the SDK', () => {
  it('does nothing when tracing.enabled is false, or when OTEL_SDK_DISABLED says so', async () => {
    const { logger, lines } = recording();
    expect(await startTracing({ enabled: false, samplingRatio: 1 }, { role: 'api', logger, env: {} })).toBeUndefined();
    expect(
      await startTracing({ enabled: true, samplingRatio: 1 }, { role: 'api', logger, env: { OTEL_SDK_DISABLED: 'true' } }),
    ).toBeUndefined();
    expect(tracingOn()).toBe(false);
    expect(lines).toEqual([]);
  });

  it('starts with the exporter, protocol and queue bounds the variables name, and stops', async () => {
    const { logger } = recording();
    const tracing = await startTracing(
      { enabled: true, samplingRatio: 1 },
      {
        role: 'worker',
        pool: 'gpu',
        logger,
        env: {
          OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
          OTEL_BSP_MAX_QUEUE_SIZE: '100',
          OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '500',
          OTEL_PROPAGATORS: 'tracecontext',
        },
      },
    );
    try {
      expect(tracingOn()).toBe(true);
      // The export batch never exceeds the queue.
      expect(tracing!.description).toEqual({
        exporter: 'otlp',
        protocol: 'http/json',
        sampler: 'parentbased_traceidratio',
        ratio: 1,
        propagators: ['tracecontext'],
        maxQueueSize: 100,
        maxExportBatchSize: 100,
      });
    } finally {
      await tracing?.shutdown(500);
    }
    expect(tracingOn()).toBe(false);
  });
});

describe('linked roots', () => {
  it('a mirrored run’s own trace is sampled whenever the request it links to is, whatever the ratio for new traces', async () => {
    const { logger } = recording();
    const tracing = await startTracing({ enabled: true, samplingRatio: 0 }, { role: 'api', logger, env: { OTEL_TRACES_EXPORTER: 'none' } });
    try {
      const client = '4bf92f3577b34da6a3ce929d0e0e4736';
      const sampled = startServerSpan('POST /graphql', (h) => (h === 'traceparent' ? `00-${client}-00f067aa0ba902b7-01` : undefined))!;
      const request = sampled.span.spanContext();
      const mirror = withContext(contextWith(sampled.span, sampled.parent), () => startLinkedSpan('mirror m'));
      expect(mirror?.isRecording()).toBe(true);
      const sc = mirror!.spanContext();
      expect(sc.traceId).not.toBe(client);
      expect(sc.traceFlags & 1).toBe(1);
      const read = mirror as unknown as { links: { context: { traceId: string; spanId: string } }[]; parentSpanContext?: unknown };
      expect(read.links.map((l) => [l.context.traceId, l.context.spanId])).toEqual([[client, request.spanId]]);
      expect(read.parentSpanContext).toBeUndefined();
      mirror!.end();
      // A new trace at ratio 0 is not sampled, and nothing is started for its mirror.
      const unsampled = startServerSpan('POST /graphql', () => undefined)!;
      expect(unsampled.span.isRecording()).toBe(false);
      expect(withContext(contextWith(unsampled.span, ROOT_CONTEXT), () => startLinkedSpan('mirror m'))).toBeUndefined();
    } finally {
      await tracing?.shutdown(500);
    }
  });
});

describe('exposition format', () => {
  it.each([
    [
      'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1',
      true,
    ],
    ['application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=1.0.0;q=0.3,*/*;q=0.1', true],
    ['text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5', false],
    ['*/*', false],
    ['text/html,application/xhtml+xml,*/*;q=0.8', false],
    [undefined, false],
  ])('Accept %s prefers OpenMetrics: %s', (accept, open) => {
    expect(prefersOpenMetrics(accept)).toBe(open);
  });
});
