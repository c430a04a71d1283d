/**
 * k6's end of test, for the stand-in: aggregates samples per metric and sub-metric
 * (`name{tag:value}`), evaluates threshold expressions and builds the `data` object k6 passes
 * to handleSummary (`metrics[key] = { type, contains, values, thresholds: { expr: { ok } } }`).
 * Zero samples behave as on k6 (v0.38 and later, where thresholds are always evaluated): a
 * counter's count is 0, so `count>0` fails; a trend's percentiles are 0, so `p(99)<100`
 * passes; a rate nobody fed has no value and its thresholds pass. That is why each script
 * guards its SLO thresholds with counters.
 */
import { BUILTIN_METRICS, type MetricDefinition, type Sample } from './runtime.ts';
import type { K6Options } from './host.ts';

const DEFAULT_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)'];

export interface MetricSummary {
  type: MetricDefinition['type'];
  contains: 'time' | 'default';
  values: Record<string, number>;
  thresholds?: Record<string, { ok: boolean }>;
}
export interface SummaryData {
  metrics: Record<string, MetricSummary>;
  state: { testRunDurationMs: number; isStdOutTTY: boolean; isStdErrTTY: boolean };
  root_group: { name: string; path: string; id: string; groups: unknown[]; checks: unknown[] };
  options: { summaryTrendStats: string[]; summaryTimeUnit: string; noColor: boolean };
}

/** `http_req_duration{scenario:open,name:predict}` as a metric name and tag filters. */
export function parseThresholdKey(key: string): { metric: string; tags: Record<string, string> } {
  const m = /^([^{]+)(?:\{(.*)\})?$/.exec(key.trim());
  if (!m) throw new Error(`malformed threshold key "${key}"`);
  const tags: Record<string, string> = {};
  for (const part of (m[2] ?? '').split(',').filter(Boolean)) {
    const i = part.indexOf(':');
    if (i < 0) throw new Error(`malformed tag "${part}" in threshold key "${key}"`);
    tags[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return { metric: m[1].trim(), tags };
}

/** k6's trend percentile: linear interpolation between the neighbouring sorted values. */
function percentile(sorted: number[], pct: number): number {
  if (sorted.length === 0) return 0;
  if (sorted.length === 1) return sorted[0];
  const i = pct * (sorted.length - 1);
  const lo = sorted[Math.floor(i)];
  const hi = sorted[Math.ceil(i)];
  return lo + (hi - lo) * (i - Math.floor(i));
}

/** One statistic (`count`, `rate`, `avg`, `p(99)`, ...) of some samples of a metric; undefined: k6 has no value. */
export function statistic(type: MetricDefinition['type'], values: number[], stat: string, durationMs: number): number | undefined {
  const sum = values.reduce((a, b) => a + b, 0);
  if (type === 'counter') return stat === 'count' ? sum : stat === 'rate' ? sum / Math.max(durationMs / 1000, 1e-9) : undefined;
  if (type === 'rate') {
    if (values.length === 0) return undefined;
    const trues = values.filter((v) => v !== 0).length;
    return stat === 'rate' ? trues / values.length : stat === 'passes' ? trues : stat === 'fails' ? values.length - trues : undefined;
  }
  if (type === 'gauge')
    return stat === 'value'
      ? (values.at(-1) ?? 0)
      : stat === 'min'
        ? Math.min(...values, 0)
        : stat === 'max'
          ? Math.max(...values, 0)
          : undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const p = /^p\((\d+(?:\.\d+)?)\)$/.exec(stat);
  if (p) return percentile(sorted, Number(p[1]) / 100);
  if (stat === 'med') return percentile(sorted, 0.5);
  if (stat === 'avg') return sorted.length ? sum / sorted.length : 0;
  if (stat === 'min') return sorted[0] ?? 0;
  if (stat === 'max') return sorted.at(-1) ?? 0;
  if (stat === 'count') return sorted.length;
  return undefined;
}

const EXPRESSION = /^\s*(avg|min|max|med|count|rate|value|p\(\d+(?:\.\d+)?\))\s*(<=|>=|<|>|===|==|!=)\s*(-?\d+(?:\.\d+)?)\s*$/;

/** Whether a threshold expression holds for these samples. */
export function holds(type: MetricDefinition['type'], values: number[], expression: string, durationMs: number): boolean {
  const m = EXPRESSION.exec(expression);
  if (!m) throw new Error(`threshold expression k6 would not parse: "${expression}"`);
  const actual = statistic(type, values, m[1], durationMs);
  if (actual === undefined) return true;
  const limit = Number(m[3]);
  switch (m[2]) {
    case '<':
      return actual < limit;
    case '<=':
      return actual <= limit;
    case '>':
      return actual > limit;
    case '>=':
      return actual >= limit;
    case '!=':
      return actual !== limit;
    default:
      return actual === limit;
  }
}

function valuesOf(def: MetricDefinition, values: number[], trendStats: string[], durationMs: number): Record<string, number> {
  const stats =
    def.type === 'trend'
      ? trendStats
      : def.type === 'counter'
        ? ['count', 'rate']
        : def.type === 'rate'
          ? ['rate', 'passes', 'fails']
          : ['value', 'min', 'max'];
  const out: Record<string, number> = {};
  for (const s of stats) out[s] = statistic(def.type, values, s, durationMs) ?? 0;
  return out;
}

/** What k6 would hand to handleSummary after these samples, thresholds evaluated. */
export function summaryData(
  options: K6Options,
  run: { samples: Sample[]; definitions: Record<string, MetricDefinition> },
  durationMs = 1000,
): SummaryData {
  const defs: Record<string, MetricDefinition> = { ...BUILTIN_METRICS, ...run.definitions };
  const trendStats = options.summaryTrendStats ?? DEFAULT_TREND_STATS;
  const metrics: Record<string, MetricSummary> = {};
  const entry = (key: string, metric: string, tags: Record<string, string>): MetricSummary => {
    const def = defs[metric];
    if (!def) throw new Error(`invalid threshold defined on ${key}: no metric ${metric} (k6 refuses to start)`);
    const values = run.samples
      .filter((s) => s.metric === metric && Object.entries(tags).every(([k, v]) => s.tags[k] === v))
      .map((s) => s.value);
    return (metrics[key] ??= {
      type: def.type,
      contains: def.isTime ? 'time' : 'default',
      values: valuesOf(def, values, trendStats, durationMs),
    });
  };
  for (const name of new Set(run.samples.map((s) => s.metric))) entry(name, name, {});
  for (const name of Object.keys(run.definitions)) entry(name, name, {});
  for (const [key, expressions] of Object.entries(options.thresholds ?? {})) {
    const { metric, tags } = parseThresholdKey(key);
    const m = entry(key, metric, tags);
    const values = run.samples
      .filter((s) => s.metric === metric && Object.entries(tags).every(([k, v]) => s.tags[k] === v))
      .map((s) => s.value);
    m.thresholds = Object.fromEntries(expressions.map((e) => [e, { ok: holds(m.type, values, e, durationMs) }]));
  }
  return {
    metrics,
    state: { testRunDurationMs: durationMs, isStdOutTTY: false, isStdErrTTY: false },
    root_group: { name: '', path: '', id: 'd41d8cd98f00b204e9800998ecf8427e', groups: [], checks: [] },
    options: { summaryTrendStats: trendStats, summaryTimeUnit: '', noColor: false },
  };
}

/** `metric{tags} expression` for every threshold that failed. */
export function failedThresholds(data: SummaryData): string[] {
  return Object.entries(data.metrics).flatMap(([key, m]) =>
    Object.entries(m.thresholds ?? {})
      .filter(([, r]) => !r.ok)
      .map(([e]) => `${key} ${e}`),
  );
}
