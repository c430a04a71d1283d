/**
 * Comparison figures of a model's version pairs: the stable against its canary (the traffic
 * each one answered, and the canary requests also run on the stable), and the stable against
 * its shadow (the requests mirrored to it). Every API process adds what it saw to one Redis
 * hash per pair, once a second (one script call per pair that moved), so the figures, the
 * gates and every replica's view are the whole deployment's. A pair's figures count from when
 * the pair began (its `since`), so a new canary starts from nothing.
 *
 * Fields of a pair's hash: `s.*` the stable's side, `c.*` the candidate's (requests, errors,
 * latency by bucket); `m.*` the mirrored runs (sent, compared, failed by code, shed by
 * reason); `rows`/`agreed` compared labels; `values`, `abs.sum`, `abs.max`, `rel.max` output
 * differences.
 */
import type { Keyspace, RedisClient } from '../redis/connection.ts';
import { redisScript } from '../redis/connection.ts';
import { histogramQuantile } from '../telemetry/histogram.ts';
import type { OutputComparison } from './compare.ts';
import type { MirrorKind } from './router.ts';

/** A pair's figures are kept this long after their last change. */
const TTL_SECONDS = 7 * 24 * 3600;
/** Upper bounds of the latency buckets, ms (the last bucket is everything above). */
export const LATENCY_BUCKETS_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000] as const;

const ADD = new URL('./scripts/addComparison-1.lua', import.meta.url);

/** One version pair of a model, from when it began. */
export interface Pair {
  model: string;
  kind: MirrorKind;
  stable: string;
  candidate: string;
  /** When the pair began: epoch ms of the live change that set the candidate, or `cfg-<digest>` for one the config.yaml states. */
  since: string;
}

export const pairId = (p: Pair): string => `${p.kind}:${p.stable}:${p.candidate}:${p.since}`;

export type Side = 's' | 'c';

/** Why mirrored work was dropped unrun or unanswered, none of it the client's business. */
export type ShedReason = 'queue' | 'deadline' | 'busy' | 'unavailable' | 'shutdown';

export interface SideFigures {
  version: string;
  requests: number;
  errors: number;
  errorRate: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface ComparisonReport extends Pair {
  stableSide: SideFigures;
  candidateSide: SideFigures;
  /** Candidate minus stable, ms. */
  latencyDeltaP50Ms: number | null;
  latencyDeltaP99Ms: number | null;
  /** Runs on the other version, started after an answer. Settled ones are compared, failed or shed. */
  mirrored: number;
  compared: number;
  failed: number;
  shed: number;
  failures: { code: string; count: number }[];
  shedReasons: { reason: string; count: number }[];
  /** Rows whose labels both versions gave, and those that agree. */
  rows: number;
  agreedRows: number;
  agreement: number | null;
  values: number;
  maxAbsDiff: number | null;
  maxRelDiff: number | null;
  /** The mean over compared requests of each one's largest absolute difference. */
  meanMaxAbsDiff: number | null;
}

type Op = '+' | 'max';

/** Adds this process's figures to the deployment's, once a second. */
export class ComparisonRecorder {
  private readonly redis: RedisClient;
  private readonly keys: Keyspace;
  private readonly add: (...keysThenArgs: (string | number)[]) => Promise<number>;
  /** Unwritten figures by pair key: field -> [operation, value]. */
  private pending = new Map<string, Map<string, [Op, number]>>();
  private timer?: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();

  constructor(redis: RedisClient, keys: Keyspace) {
    this.redis = redis;
    this.keys = keys;
    this.add = redisScript<number>(redis, ADD);
  }

  start(intervalMs = 1000): void {
    this.timer ??= setInterval(() => void this.flush(), intervalMs);
    this.timer.unref();
  }

  private put(pair: Pair, field: string, op: Op, value: number): void {
    const key = this.keys.rolloutComparison(pair.model, pairId(pair));
    let fields = this.pending.get(key);
    if (!fields) this.pending.set(key, (fields = new Map()));
    const seen = fields.get(field);
    if (!seen) fields.set(field, [op, value]);
    else seen[1] = op === '+' ? seen[1] + value : Math.max(seen[1], value);
  }

  /** A request one side answered (or failed, with an error that is the version's), and its latency. */
  side(pair: Pair, side: Side, ok: boolean, ms: number): void {
    this.put(pair, `${side}.n`, '+', 1);
    if (!ok) this.put(pair, `${side}.err`, '+', 1);
    const bucket = LATENCY_BUCKETS_MS.findIndex((le) => ms <= le);
    this.put(pair, `${side}.lat.${bucket < 0 ? 'inf' : LATENCY_BUCKETS_MS[bucket]}`, '+', 1);
  }

  mirrorSent(pair: Pair): void {
    this.put(pair, 'm.sent', '+', 1);
  }

  mirrorCompared(pair: Pair, c: OutputComparison): void {
    this.put(pair, 'm.compared', '+', 1);
    this.put(pair, 'rows', '+', c.rows);
    this.put(pair, 'agreed', '+', c.agreedRows);
    if (c.values > 0) {
      this.put(pair, 'values', '+', c.values);
      this.put(pair, 'abs.n', '+', 1);
      this.put(pair, 'abs.sum', '+', c.maxAbs);
      this.put(pair, 'abs.max', 'max', c.maxAbs);
      this.put(pair, 'rel.max', 'max', c.maxRel);
    }
  }

  mirrorFailed(pair: Pair, code: string): void {
    this.put(pair, 'm.failed', '+', 1);
    this.put(pair, `m.failed.${code}`, '+', 1);
  }

  mirrorShed(pair: Pair, reason: ShedReason): void {
    this.put(pair, 'm.shed', '+', 1);
    this.put(pair, `m.shed.${reason}`, '+', 1);
  }

  /** Writes what is pending; what a failed write held is written by the next one. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.write()).catch(() => {});
    return this.flushing;
  }

  private async write(): Promise<void> {
    const batch = this.pending;
    this.pending = new Map();
    await Promise.all(
      [...batch].map(async ([key, fields]) => {
        const args: (string | number)[] = [TTL_SECONDS];
        for (const [field, [op, value]] of fields) args.push(op, field, value);
        try {
          await this.add(key, ...args);
        } catch (e) {
          // Put back for the next flush (a write that failed after Redis applied it counts twice: rare, and only in a figure).
          for (const [field, [op, value]] of fields) {
            const now = this.pending.get(key) ?? new Map<string, [Op, number]>();
            const seen = now.get(field);
            now.set(field, seen ? [op, op === '+' ? seen[1] + value : Math.max(seen[1], value)] : [op, value]);
            this.pending.set(key, now);
          }
          throw e;
        }
      }),
    );
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}

function side(hash: Record<string, string>, s: Side, version: string): SideFigures {
  const n = (f: string): number => Number(hash[f] ?? 0);
  const requests = n(`${s}.n`);
  const errors = n(`${s}.err`);
  let cumulative = 0;
  const buckets = [...LATENCY_BUCKETS_MS, Infinity].map((le) => {
    cumulative += n(`${s}.lat.${le === Infinity ? 'inf' : le}`);
    return { le, count: cumulative };
  });
  return {
    version,
    requests,
    errors,
    errorRate: requests > 0 ? errors / requests : null,
    p50Ms: histogramQuantile(0.5, buckets) ?? null,
    p99Ms: histogramQuantile(0.99, buckets) ?? null,
  };
}

function breakdown(hash: Record<string, string>, prefix: string): { name: string; count: number }[] {
  return Object.entries(hash)
    .filter(([f]) => f.startsWith(prefix))
    .map(([f, v]) => ({ name: f.slice(prefix.length), count: Number(v) }))
    .sort((a, b) => b.count - a.count);
}

/** The figures of one pair, from its hash. */
export function toReport(pair: Pair, hash: Record<string, string>): ComparisonReport {
  const n = (f: string): number => Number(hash[f] ?? 0);
  const stableSide = side(hash, 's', pair.stable);
  const candidateSide = side(hash, 'c', pair.candidate);
  const delta = (a: number | null, b: number | null): number | null => (a === null || b === null ? null : b - a);
  const rows = n('rows');
  const compared = n('abs.n');
  return {
    ...pair,
    stableSide,
    candidateSide,
    latencyDeltaP50Ms: delta(stableSide.p50Ms, candidateSide.p50Ms),
    latencyDeltaP99Ms: delta(stableSide.p99Ms, candidateSide.p99Ms),
    mirrored: n('m.sent'),
    compared: n('m.compared'),
    failed: n('m.failed'),
    shed: n('m.shed'),
    failures: breakdown(hash, 'm.failed.').map(({ name, count }) => ({ code: name, count })),
    shedReasons: breakdown(hash, 'm.shed.').map(({ name, count }) => ({ reason: name, count })),
    rows,
    agreedRows: n('agreed'),
    agreement: rows > 0 ? n('agreed') / rows : null,
    values: n('values'),
    maxAbsDiff: compared > 0 ? n('abs.max') : null,
    maxRelDiff: compared > 0 ? n('rel.max') : null,
    meanMaxAbsDiff: compared > 0 ? n('abs.sum') / compared : null,
  };
}

/** The deployment's figures of a pair (all zero before any were written). */
export async function readComparison(redis: RedisClient, keys: Keyspace, pair: Pair): Promise<ComparisonReport> {
  return toReport(pair, await redis.hgetall(keys.rolloutComparison(pair.model, pairId(pair))));
}
