/**
 * Live figures of the whole deployment, for the operations view (`serverStats`).
 *
 * Every process, each API replica and each worker, runs a StatsRecorder. Once a second it
 * reads its own Prometheus counters and histograms (the ones /metrics exposes) and adds what
 * moved since its last tick into two Redis hashes: one per second (kept a few minutes) for the
 * live window, and one per 5-second step (kept 15 minutes) for the plots. HINCRBYFLOAT sums
 * every process's share, so any API replica reads the whole deployment from a handful of keys:
 * no replica scrapes the others, a process that restarts (its counters back at zero) adds only
 * what it counted since, and a tick that could not reach Redis is added by the next one.
 * Gauges (queue depths, batch limits, drift) are not summed here: readers take them live.
 */
import { hostname } from 'node:os';
import type { RedisClient } from '../redis/connection.ts';
import type { Registry, RegistryContentType } from 'prom-client';
import { keyspace, keysOf } from '../redis/connection.ts';
import type { CumulativeBucket } from '../telemetry/histogram.ts';

/** The counters and histograms that are summed across processes. */
export const SUMMED_METRICS = [
  'batchline_requests_total',
  'batchline_latency_seconds',
  'batchline_cache_hits_total',
  'batchline_cache_misses_total',
  'batchline_worker_jobs_total',
  'batchline_batch_rows',
  'batchline_batch_inference_seconds',
  'batchline_batches_total',
  'batchline_rejections_total',
] as const;

export const SECOND_MS = 1000;
/** Resolution of the plots. */
export const STEP_MS = 5000;
const SECOND_TTL_S = 180;
const STEP_TTL_S = 15 * 60;
/** A process not heard from for this long is gone. */
const PROCESS_TTL_MS = 5000;

/** The stats keys; on a cluster (`tagged`) they share one slot, as one MULTI writes them all. */
export function statsKeys(prefix: string, tagged = false) {
  return keyspace(prefix, tagged).stats;
}

/** One summed series: a sample name (`_bucket`, `_sum`, `_count` for histograms) and its labels. */
export interface Entry {
  metric: string;
  labels: Record<string, string>;
  value: number;
}

/** Labels in a stable order, so one series is one hash field whichever process wrote it. */
function fieldOf(metric: string, labels: Record<string, string | number>): string {
  const sorted = Object.keys(labels)
    .sort()
    .map((k) => [k, String(labels[k])]);
  return `${metric}|${JSON.stringify(Object.fromEntries(sorted))}`;
}

function parseField(field: string, value: string): Entry | undefined {
  const bar = field.indexOf('|');
  if (bar < 0) return undefined;
  try {
    return { metric: field.slice(0, bar), labels: JSON.parse(field.slice(bar + 1)) as Record<string, string>, value: Number(value) };
  } catch {
    return undefined;
  }
}

export interface CounterValue {
  value: number;
  /** For a histogram's samples: the histogram series (name and labels but `le`) they belong to. */
  series?: string;
}

/** The cumulative value of every summed series in a registry, by hash field. */
export async function readCounters(registry: Registry<RegistryContentType>): Promise<Map<string, CounterValue>> {
  const out = new Map<string, CounterValue>();
  for (const name of SUMMED_METRICS) {
    const metric = registry.getSingleMetric(name);
    if (!metric) continue;
    const { type, values } = await metric.get();
    for (const v of values) {
      const { role: _role, ...labels } = v.labels as Record<string, string | number>;
      const { le: _le, ...seriesLabels } = labels;
      out.set(fieldOf((v as { metricName?: string }).metricName ?? name, labels), {
        value: v.value,
        series: String(type) === 'histogram' ? fieldOf(name, seriesLabels) : undefined,
      });
    }
  }
  return out;
}

export interface ProcessInfo {
  id: string;
  role: 'api' | 'worker';
  pool?: string;
  /** A worker's execution provider, and one line on why the providers before it were skipped. */
  executionProvider?: string;
  executionProviderNote?: string;
  pid: number;
  host: string;
  startedAt: number;
  seenAt: number;
}

export interface RecorderOptions {
  redis: RedisClient;
  prefix: string;
  registry: Registry<RegistryContentType>;
  process: Pick<ProcessInfo, 'id' | 'role' | 'pool' | 'executionProvider' | 'executionProviderNote'>;
  /** Milliseconds since the epoch. @defaultValue Date.now */
  now?: () => number;
}

/** Adds this process's counter movements to the deployment's per-second and per-step sums. */
export class StatsRecorder {
  private readonly o: RecorderOptions;
  private readonly keys: ReturnType<typeof statsKeys>;
  private readonly info: ProcessInfo;
  private readonly now: () => number;
  /** What has been added to Redis so far, per field. */
  private written = new Map<string, CounterValue>();
  private timer?: NodeJS.Timeout;
  private ticking: Promise<void> = Promise.resolve();

  constructor(o: RecorderOptions) {
    this.o = o;
    this.keys = keysOf(o.redis, o.prefix).stats;
    this.now = o.now ?? Date.now;
    this.info = { ...o.process, pid: process.pid, host: hostname(), startedAt: this.now(), seenAt: 0 };
  }

  start(intervalMs = SECOND_MS): void {
    this.timer ??= setInterval(() => void this.tick(), intervalMs);
    this.timer.unref();
  }

  /** Writes what moved since the last successful tick; a failed write is retried by the next. */
  tick(): Promise<void> {
    this.ticking = this.ticking.then(() => this.write()).catch(() => {});
    return this.ticking;
  }

  private async write(): Promise<void> {
    const current = await readCounters(this.o.registry);
    const now = this.now();
    const second = this.keys.second(Math.floor(now / SECOND_MS));
    const step = this.keys.step(Math.floor(now / STEP_MS));
    const multi = this.o.redis.multi();
    const delta = (field: string, c: CounterValue) => c.value - (this.written.get(field)?.value ?? 0);
    // A histogram that moved writes every bucket, unmoved ones as 0, so readers know its
    // bounds: a quantile interpolates from the bucket below, not from 0.
    const movedHistograms = new Set<string>();
    for (const [field, c] of current) if (c.series && delta(field, c) !== 0) movedHistograms.add(c.series);
    let moved = 0;
    for (const [field, c] of current) {
      const d = delta(field, c);
      if (d === 0 && !(c.series && movedHistograms.has(c.series))) continue;
      moved++;
      multi.hincrbyfloat(second, field, d);
      multi.hincrbyfloat(step, field, d);
    }
    if (moved) multi.expire(second, SECOND_TTL_S).expire(step, STEP_TTL_S);
    multi.hset(this.keys.processes, this.info.id, JSON.stringify({ ...this.info, seenAt: now }));
    await multi.exec();
    this.written = current;
  }

  /** A last tick, then leaves the process list. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.tick();
    await this.o.redis.hdel(this.keys.processes, this.info.id).catch(() => {});
  }
}

/** Reads the sums every process writes. */
export class StatsReader {
  private readonly redis: RedisClient;
  private readonly keys: ReturnType<typeof statsKeys>;

  constructor(redis: RedisClient, prefix: string) {
    this.redis = redis;
    this.keys = keysOf(redis, prefix).stats;
  }

  private async sum(keys: string[]): Promise<Entry[][]> {
    if (keys.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const k of keys) pipeline.hgetall(k);
    const replies = (await pipeline.exec()) ?? [];
    return replies.map(([err, hash]) => {
      if (err) throw err;
      return Object.entries(hash as Record<string, string>)
        .map(([f, v]) => parseField(f, v))
        .filter((e): e is Entry => e !== undefined);
    });
  }

  /**
   * The last `seconds` whole seconds before `now`, summed over every process. The current
   * second is left out: processes tick at different moments, so it is still being filled.
   */
  async window(now: number, seconds: number): Promise<Entry[]> {
    const last = Math.floor(now / SECOND_MS) - 1;
    const keys = Array.from({ length: seconds }, (_, i) => this.keys.second(last - i));
    return merge((await this.sum(keys)).flat());
  }

  /** The last `count` whole steps before `now`, oldest first, each with its start time. */
  async steps(now: number, count: number): Promise<{ at: number; entries: Entry[] }[]> {
    const last = Math.floor(now / STEP_MS) - 1;
    const steps = Array.from({ length: count }, (_, i) => last - count + 1 + i);
    const sums = await this.sum(steps.map((s) => this.keys.step(s)));
    return steps.map((s, i) => ({ at: s * STEP_MS, entries: sums[i] }));
  }

  /** Processes that ticked within the last few seconds; the rest are pruned. */
  async processes(now: number): Promise<ProcessInfo[]> {
    const all = await this.redis.hgetall(this.keys.processes);
    const alive: ProcessInfo[] = [];
    const gone: string[] = [];
    for (const [id, json] of Object.entries(all)) {
      const p = JSON.parse(json) as ProcessInfo;
      if (now - p.seenAt <= PROCESS_TTL_MS) alive.push(p);
      else gone.push(id);
    }
    if (gone.length) await this.redis.hdel(this.keys.processes, ...gone).catch(() => {});
    return alive.sort((a, b) => a.role.localeCompare(b.role) || (a.pool ?? '').localeCompare(b.pool ?? '') || a.startedAt - b.startedAt);
  }
}

/** Sums entries of the same series. */
export function merge(entries: Entry[]): Entry[] {
  const byField = new Map<string, Entry>();
  for (const e of entries) {
    const f = fieldOf(e.metric, e.labels);
    const seen = byField.get(f);
    if (seen) seen.value += e.value;
    else byField.set(f, { ...e });
  }
  return [...byField.values()];
}

function matches(e: Entry, metric: string, where: Record<string, string>): boolean {
  if (e.metric !== metric) return false;
  for (const [k, v] of Object.entries(where)) if (e.labels[k] !== v) return false;
  return true;
}

/** The sum of a counter's series that carry the given labels. */
export function counterSum(entries: Entry[], metric: string, where: Record<string, string> = {}): number {
  let n = 0;
  for (const e of entries) if (matches(e, metric, where)) n += e.value;
  return n;
}

/** A counter's sums by one label's values. */
export function countBy(entries: Entry[], metric: string, label: string, where: Record<string, string> = {}): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of entries) {
    if (!matches(e, metric, where) || e.labels[label] === undefined || e.value === 0) continue;
    out.set(e.labels[label], (out.get(e.labels[label]) ?? 0) + e.value);
  }
  return out;
}

export interface HistogramSum {
  /** Cumulative counts by upper bound, ascending, `Infinity` last. */
  buckets: CumulativeBucket[];
  count: number;
  sum: number;
}

/** A histogram's buckets, count and sum over the series that carry the given labels. */
export function histogram(entries: Entry[], metric: string, where: Record<string, string> = {}): HistogramSum {
  const byLe = new Map<number, number>();
  for (const e of entries) {
    if (!matches(e, `${metric}_bucket`, where)) continue;
    const le = e.labels.le === '+Inf' ? Infinity : Number(e.labels.le);
    byLe.set(le, (byLe.get(le) ?? 0) + e.value);
  }
  const buckets = [...byLe].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
  return { buckets, count: counterSum(entries, `${metric}_count`, where), sum: counterSum(entries, `${metric}_sum`, where) };
}
