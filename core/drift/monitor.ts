/**
 * The live statistical monitor: workers count the classes they predict per model version
 * and minute in Redis; the drift job tests the last window's counts against the training
 * class distribution recorded with the model (chi-square goodness of fit) and stores a
 * report that the API serves as a query and a metric.
 */
import type { RedisClient } from '../redis/connection.ts';
import type { Keyspace } from '../redis/connection.ts';
import type { ModelVersion } from '../models/repository.ts';
import { chiSquareTest, type ChiSquareResult } from './chi-square.ts';
import { modelKey } from '../prediction/record.ts';

/** Counts predicted labels in memory and flushes them to Redis once a second (one pipeline). */
export class DriftCounter {
  private readonly redis: RedisClient;
  private readonly keys: Keyspace;
  private readonly retainSeconds: number;
  private pending = new Map<string, Map<string, number>>();
  private timer?: NodeJS.Timeout;

  constructor(redis: RedisClient, keys: Keyspace, retainSeconds: number) {
    this.redis = redis;
    this.keys = keys;
    this.retainSeconds = retainSeconds;
  }

  add(modelKey: string, labels: (string | null)[]): void {
    let m = this.pending.get(modelKey);
    if (!m) this.pending.set(modelKey, (m = new Map()));
    for (const l of labels) if (l !== null) m.set(l, (m.get(l) ?? 0) + 1);
    this.timer ??= setTimeout(() => void this.flush(), 1000);
  }

  async flush(): Promise<void> {
    this.timer = undefined;
    if (this.pending.size === 0) return;
    const minute = Math.floor(Date.now() / 60_000);
    const batch = this.pending;
    this.pending = new Map();
    // One pipeline per model: on a cluster a pipeline must stay within one slot, and a
    // model's counts share its tag (core/redis/connection.ts).
    const flushes = [...batch].map(([modelKey, counts]) => {
      const pipe = this.redis.pipeline();
      const key = this.keys.driftCounts(modelKey, minute);
      for (const [label, n] of counts) pipe.hincrby(key, label, n);
      pipe.expire(key, this.retainSeconds);
      // Monitoring must never fail a prediction; a lost second of counts is acceptable.
      return pipe.exec().catch(() => {});
    });
    await Promise.all(flushes);
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    await this.flush();
  }
}

/** The chi-square test of a model's recent predicted classes, with what it was run on. */
export interface DriftReport extends ChiSquareResult {
  model: string;
  version: string;
  status: 'OK' | 'DRIFT' | 'INSUFFICIENT_DATA';
  checkedAt: number;
  windowMinutes: number;
  alpha: number;
}

/** The training class distribution recorded beside a model, if any. */
export function trainingDistribution(v: ModelVersion): Record<string, number> | undefined {
  const d = v.metrics?.trainingClassDistribution;
  return d && typeof d === 'object' ? (d as Record<string, number>) : undefined;
}

/** Tests one model version's recent predictions and stores the report. */
export async function checkDrift(
  redis: RedisClient,
  keys: Keyspace,
  v: ModelVersion,
  options: { windowMinutes: number; minSamples: number; alpha: number; now?: number },
): Promise<DriftReport | undefined> {
  const training = trainingDistribution(v);
  if (!training) return undefined;
  const key = modelKey(v.name, v.version);
  const nowMinute = Math.floor((options.now ?? Date.now()) / 60_000);
  const pipe = redis.pipeline();
  for (let m = nowMinute - options.windowMinutes + 1; m <= nowMinute; m++) pipe.hgetall(keys.driftCounts(key, m));
  const observed: Record<string, number> = {};
  for (const [err, counts] of (await pipe.exec()) ?? []) {
    if (err) throw err;
    for (const [label, n] of Object.entries(counts as Record<string, string>)) observed[label] = (observed[label] ?? 0) + Number(n);
  }
  const test = chiSquareTest(observed, training);
  const enough = test.samples >= options.minSamples;
  const report: DriftReport = {
    model: v.name,
    version: v.version,
    status: !enough ? 'INSUFFICIENT_DATA' : test.pValue < options.alpha ? 'DRIFT' : 'OK',
    checkedAt: options.now ?? Date.now(),
    windowMinutes: options.windowMinutes,
    alpha: options.alpha,
    ...test,
  };
  await redis.set(keys.driftReport(key), JSON.stringify(report), 'EX', 24 * 3600);
  return report;
}

export async function readDriftReport(redis: RedisClient, keys: Keyspace, modelKey: string): Promise<DriftReport | undefined> {
  const raw = await redis.get(keys.driftReport(modelKey));
  return raw ? (JSON.parse(raw) as DriftReport) : undefined;
}
