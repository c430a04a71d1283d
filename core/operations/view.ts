/**
 * The operations view's figures: models with their live state, queues per pool, and the
 * request, latency, batching, cache and rejection figures of the last seconds and minutes,
 * for the whole deployment (core/operations/live-stats.ts explains how every process contributes).
 * Nothing here knows GraphQL; the resolvers decide what a caller may see.
 */
import type { RedisClient } from '../redis/connection.ts';
import { ERROR_CODES, type ErrorCode } from '../errors/registry.ts';
import { POOLS, type BatchlineConfig, type PoolName } from '../config/settings.ts';
import type { PredictionQueues } from '../prediction/queues.ts';
import type { ModelCatalog, ModelInfo } from '../api/catalog.ts';
import { PREDICT_OPERATIONS } from '../api/predictor.ts';
import type { DriftReport } from '../drift/monitor.ts';
import type { RolloutReport } from '../rollout/rollout.ts';
import { STEP_MS, StatsReader, countBy, counterSum, histogram, merge, type Entry, type ProcessInfo } from './live-stats.ts';
import { histogramQuantile } from '../telemetry/histogram.ts';

/** Refusals that say "not now": the client should come back (429, 503, 504). */
export const REJECTION_CODES = (Object.keys(ERROR_CODES) as ErrorCode[]).filter((c) => [429, 503, 504].includes(ERROR_CODES[c].status));

export interface PhaseLatency {
  phase: 'total' | 'queue' | 'inference';
  count: number;
  p50Ms: number | null;
  p99Ms: number | null;
  meanMs: number | null;
}

export interface Rejection {
  code: string;
  status: number;
  count: number;
}

export interface StatsPoint {
  at: number;
  requestsPerSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
  queueP50Ms: number | null;
  inferenceP50Ms: number | null;
  meanBatchRows: number | null;
}

export interface ModelFigures {
  name: string;
  /** Takes `text` (it has a preprocessing step); otherwise tensors. */
  acceptsText: boolean;
  versions: ModelInfo[];
  requestsPerSecond: number;
  errorsPerSecond: number;
  latency: PhaseLatency[];
  /** Batches by size bucket: `rows` is the bucket's upper bound (Infinity for the last). */
  batchSizes: { rows: number; count: number }[];
  batchesPerSecond: number;
  meanBatchRows: number | null;
  batchReasons: { label: string; count: number }[];
  cacheHitRatio: number | null;
  rejections: Rejection[];
  drift: DriftReport | null;
  /** The traffic policy, its version pairs' figures and the last rollback. */
  rollout: RolloutReport | null;
  history: StatsPoint[];
}

export interface PoolQueue {
  pool: PoolName;
  waiting: number;
  active: number;
  delayed: number;
  failed: number;
  maxDepth: number;
}

export interface DeploymentView {
  at: number;
  windowSeconds: number;
  processes: ProcessInfo[];
  queues: PoolQueue[];
  /** Every refusal with 429, 503 or 504, any operation (rate limits are refused before a model is known). */
  rejections: Rejection[];
  models: ModelFigures[];
}

export interface ViewOptions {
  windowSeconds: number;
  historySteps: number;
  /** Models the caller may see. */
  visible: (model: string) => boolean;
}

/** Workers label batch metrics by model version (`name@version`); the view is per model. */
function byModel(entries: Entry[]): Entry[] {
  return merge(
    entries.map((e) =>
      e.labels.model?.includes('@') ? { ...e, labels: { ...e.labels, model: e.labels.model.slice(0, e.labels.model.indexOf('@')) } } : e,
    ),
  );
}

const ms = (seconds: number | undefined): number | null => (seconds === undefined ? null : seconds * 1000);

function phaseLatency(entries: Entry[], model: string, phase: PhaseLatency['phase']): PhaseLatency {
  const h = histogram(entries, 'batchline_latency_seconds', { model, phase });
  return {
    phase,
    count: h.count,
    p50Ms: ms(histogramQuantile(0.5, h.buckets)),
    p99Ms: ms(histogramQuantile(0.99, h.buckets)),
    meanMs: h.count ? (h.sum / h.count) * 1000 : null,
  };
}

/** New requests (predict by every door, and submit; cancellations are about earlier work), and how many failed. */
function requests(entries: Entry[], model: string): { all: number; failed: number } {
  let all = 0;
  let ok = 0;
  for (const operation of [...PREDICT_OPERATIONS, 'submit']) {
    all += counterSum(entries, 'batchline_requests_total', { model, operation });
    ok += counterSum(entries, 'batchline_requests_total', { model, operation, outcome: 'ok' });
  }
  return { all, failed: all - ok };
}

function rejectionsOf(counts: Map<string, number>): Rejection[] {
  return REJECTION_CODES.filter((c) => counts.get(c)).map((code) => ({ code, status: ERROR_CODES[code].status, count: counts.get(code)! }));
}

function point(at: number, entries: Entry[], model: string, seconds: number): StatsPoint {
  const total = histogram(entries, 'batchline_latency_seconds', { model, phase: 'total' });
  const queue = histogram(entries, 'batchline_latency_seconds', { model, phase: 'queue' });
  const inference = histogram(entries, 'batchline_latency_seconds', { model, phase: 'inference' });
  const rows = histogram(entries, 'batchline_batch_rows', { model });
  return {
    at,
    requestsPerSecond: requests(entries, model).all / seconds,
    p50Ms: ms(histogramQuantile(0.5, total.buckets)),
    p99Ms: ms(histogramQuantile(0.99, total.buckets)),
    queueP50Ms: ms(histogramQuantile(0.5, queue.buckets)),
    inferenceP50Ms: ms(histogramQuantile(0.5, inference.buckets)),
    meanBatchRows: rows.count ? rows.sum / rows.count : null,
  };
}

export interface OpsStatsDeps {
  config: BatchlineConfig;
  redis: RedisClient;
  queues: PredictionQueues;
  catalog: ModelCatalog;
  rollout?: { report(model: string): Promise<RolloutReport | undefined> };
}

export class OpsStats {
  private readonly reader: StatsReader;
  private readonly deps: OpsStatsDeps;
  /** Viewers of one replica share one read of Redis per second. */
  private cached?: { key: string; at: number; value: Promise<{ window: Entry[]; steps: { at: number; entries: Entry[] }[] }> };

  constructor(deps: OpsStatsDeps) {
    this.deps = deps;
    this.reader = new StatsReader(deps.redis, deps.config.redis.prefix);
  }

  private sums(now: number, windowSeconds: number, historySteps: number) {
    const key = `${windowSeconds}:${historySteps}`;
    const second = Math.floor(now / 1000);
    if (this.cached?.key !== key || this.cached.at !== second) {
      const value = Promise.all([this.reader.window(now, windowSeconds), historySteps ? this.reader.steps(now, historySteps) : []]).then(
        ([window, steps]) => ({
          window: byModel(window),
          steps: steps.map((st) => ({ at: st.at, entries: byModel(st.entries) })),
        }),
      );
      value.catch(() => {});
      this.cached = { key, at: second, value };
    }
    return this.cached.value;
  }

  private async queueCounts(pools: readonly PoolName[]): Promise<PoolQueue[]> {
    return Promise.all(
      pools.map(async (pool) => {
        const [c, extra] = await Promise.all([this.deps.queues.counts(pool), this.deps.queues.extraWaitingPredictions(pool)]);
        return {
          pool,
          // Predictions, as `queue.maxDepth` counts them: a coalesced job counts each of its submissions.
          // Jobs handed back or backing off are in `delayed` (jobs); admission counts them too.
          waiting: (c.wait ?? 0) + (c.prioritized ?? 0) + extra,
          active: c.active ?? 0,
          delayed: c.delayed ?? 0,
          failed: c.failed ?? 0,
          maxDepth: this.deps.config.queue.maxDepth,
        };
      }),
    );
  }

  async view(o: ViewOptions, now = Date.now()): Promise<DeploymentView> {
    const { catalog } = this.deps;
    const [{ window, steps }, infos, processes] = await Promise.all([
      this.sums(now, o.windowSeconds, o.historySteps),
      catalog.models(),
      this.reader.processes(now),
    ]);
    const byName = new Map<string, ModelInfo[]>();
    for (const m of infos) if (o.visible(m.name)) byName.set(m.name, [...(byName.get(m.name) ?? []), m]);
    const pools = POOLS.filter((p) => [...byName.values()].some((vs) => vs.some((v) => v.config?.pool === p)));
    const queues = await this.queueCounts(pools);
    const models = await Promise.all([...byName].map(([name, versions]) => this.figures(name, versions, window, steps, o.windowSeconds)));
    return {
      at: now,
      windowSeconds: o.windowSeconds,
      processes,
      queues,
      rejections: rejectionsOf(countBy(window, 'batchline_rejections_total', 'code')),
      models,
    };
  }

  private async figures(
    name: string,
    versions: ModelInfo[],
    window: Entry[],
    steps: { at: number; entries: Entry[] }[],
    seconds: number,
  ): Promise<ModelFigures> {
    const req = requests(window, name);
    const rows = histogram(window, 'batchline_batch_rows', { model: name });
    const hits = counterSum(window, 'batchline_cache_hits_total', { model: name });
    const misses = counterSum(window, 'batchline_cache_misses_total', { model: name });
    const [drift, rollout] = await Promise.all([
      this.deps.catalog.drift(name).catch(() => undefined),
      this.deps.rollout?.report(name).catch(() => undefined),
    ]);
    let below = 0;
    return {
      name,
      acceptsText: versions.some((v) => v.config?.preprocessing !== undefined),
      versions,
      requestsPerSecond: req.all / seconds,
      errorsPerSecond: req.failed / seconds,
      latency: (['total', 'queue', 'inference'] as const).map((p) => phaseLatency(window, name, p)),
      batchSizes: rows.buckets.map((b) => {
        const count = b.count - below;
        below = b.count;
        return { rows: b.le, count };
      }),
      batchesPerSecond: rows.count / seconds,
      meanBatchRows: rows.count ? rows.sum / rows.count : null,
      batchReasons: [...countBy(window, 'batchline_batches_total', 'reason', { model: name })].map(([label, count]) => ({ label, count })),
      cacheHitRatio: hits + misses > 0 ? hits / (hits + misses) : null,
      rejections: rejectionsOf(countBy(window, 'batchline_requests_total', 'outcome', { model: name })),
      drift: drift ?? null,
      rollout: rollout ?? null,
      history: steps.map((s) => point(s.at, s.entries, name, STEP_MS / 1000)),
    };
  }
}
