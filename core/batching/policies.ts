/**
 * How many rows a batch may hold, per model:
 *
 * - `fixed`: the configured `maxBatchSize`.
 * - `aimd` (Clipper, NSDI '17): add `step` rows to the limit after each batch whose latency
 *   met the SLO; multiply it by `backoff` (0.9) after a miss. As in Clipper, a free runtime
 *   slot takes what has gathered at once (reason `idle`), and while every slot is busy a batch
 *   gathers up to the limit: the batch size follows the load, and the limit only caps it. The
 *   limit starts at `max` and comes down on misses: started at 1, every batch closed while the
 *   limit was small waits, immutable, for a slot, and a burst leaves a queue of tiny batches
 *   that takes seconds to drain (found in virtual time, core/simulation).
 * - `predictive` (as BentoML): fit batch latency = a + b * rows over recent batches by least
 *   squares and allow the largest batch whose predicted run (a slow one: the fit times the
 *   runs' own spread about it) still meets the remaining deadline of the batch's oldest request, and no larger than needed to spread the fixed
 *   cost `a` to a tenth of the run (more rows then add latency, not throughput). It also
 *   dispatches early: once a runtime slot is free and the oldest request has waited as long
 *   as one batch's fixed cost `a`, the batch goes (reason `idle`). Waiting up to the fixed
 *   cost and no longer is the ski-rental rule: at most twice the latency of the better of "go
 *   now" and "wait for more", whatever arrives. Without it a batch waits out `maxDelayMs` for
 *   requests that may never come (closed-loop clients all waiting on that very batch).
 *
 * Both adaptive policies also stop growing a batch at the size that ran the most rows per ms,
 * once a larger size has run slower per row (see throughput-curve.ts).
 */
import type { BatchingSpec } from '../models/config.ts';
import { ThroughputCurve } from './throughput-curve.ts';

export interface BatchPolicy {
  readonly name: BatchingSpec['policy'];
  /** Rows allowed in a batch whose oldest request must finish `remainingMs` from now. */
  limit(remainingMs?: number): number;
  /** Predicted run time of a batch of `rows`, if the policy has a model of it. */
  predictMs(rows: number): number | undefined;
  /** Tells the policy how long a batch of `rows` took. */
  observe(rows: number, latencyMs: number): void;
  /** How long the oldest request waits before its batch may go to a free runtime slot; undefined: wait for `maxDelayMs`. */
  dispatchAfterMs(): number | undefined;
}

export class FixedPolicy implements BatchPolicy {
  readonly name = 'fixed' as const;
  private readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  limit(): number {
    return this.max;
  }
  predictMs(): number | undefined {
    return undefined;
  }
  observe(): void {}
  dispatchAfterMs(): number | undefined {
    return undefined;
  }
}

export class AimdPolicy implements BatchPolicy {
  readonly name = 'aimd' as const;
  private current: number;
  private readonly max: number;
  private readonly sloMs: number;
  private readonly step: number;
  private readonly backoff: number;
  private readonly curve = new ThroughputCurve();

  constructor(options: { max: number; sloMs: number; start?: number; step?: number; backoff?: number }) {
    this.max = options.max;
    this.sloMs = options.sloMs;
    this.step = options.step ?? 1;
    this.backoff = options.backoff ?? 0.9;
    this.current = Math.min(options.max, options.start ?? options.max);
  }

  limit(): number {
    return Math.max(1, Math.floor(Math.min(this.current, this.curve.capRows() ?? Infinity)));
  }

  predictMs(): number | undefined {
    return undefined;
  }

  dispatchAfterMs(): number | undefined {
    return 0;
  }

  observe(rows: number, latencyMs: number): void {
    const limit = this.limit();
    this.curve.observe(rows, latencyMs);
    if (latencyMs > this.sloMs) {
      this.current = Math.max(1, Math.floor(limit * this.backoff));
    } else if (rows >= limit) {
      // Only a batch that used the whole limit is evidence the limit can grow.
      this.current = Math.min(this.max, this.current + this.step);
    }
  }
}

/** A slow run, for deadlines: this many standard deviations of ln(run / fit) above the fit (1.645: one run in 20 is slower). */
const SLOW_Z = 1.645;

/** Share of a batch's run that goes to its rows (not its fixed cost) at which `predictive` stops growing a batch. */
const AMORTIZED = 0.9;

export class PredictivePolicy implements BatchPolicy {
  readonly name = 'predictive' as const;
  private readonly max: number;
  private readonly sloMs: number;
  private readonly window: number;
  private readonly samples: { rows: number; ms: number }[] = [];
  private fit?: { a: number; b: number };
  /** How much slower than the fit a slow run is: exp(SLOW_Z x the spread of ln(run / fit)). */
  private slow = 1;
  private readonly curve = new ThroughputCurve();

  constructor(options: { max: number; sloMs: number; window?: number }) {
    this.max = options.max;
    this.sloMs = options.sloMs;
    this.window = options.window ?? 64;
  }

  /** The current fit, once two different batch sizes have been seen. */
  get model(): { a: number; b: number } | undefined {
    return this.fit;
  }

  /** Run time of a batch of `rows` to plan deadlines by: the fit, times the slow-run factor. */
  predictMs(rows: number): number | undefined {
    return this.fit ? (this.fit.a + this.fit.b * rows) * this.slow : undefined;
  }

  dispatchAfterMs(): number | undefined {
    // Before any fit, at once: batches then grow from small sizes, which teaches the fit and
    // the throughput curve the small end too (waiting out maxDelayMs first put the very first
    // batch, and so the whole run, past a CPU's throughput peak).
    return this.fit?.a ?? 0;
  }

  limit(remainingMs: number = this.sloMs): number {
    if (!this.fit) return this.max;
    const { a, b } = this.fit;
    const peak = this.curve.capRows() ?? Infinity;
    if (b <= 0) return Math.min(this.max, peak);
    const rows = Math.floor((remainingMs / this.slow - a) / b);
    // The amortized size trusts the line's fixed cost `a`. Fitted over large batches of a
    // convex curve, `a` comes out near 0 and the rule says batching buys nothing (limit 1),
    // while batches of some size were seen to run far more rows per ms: never cap below that.
    const amortized = Math.max(this.amortizedRows(a, b), this.curve.fastestRows() ?? 1);
    return Math.max(1, Math.min(this.max, rows, amortized, peak));
  }

  /**
   * The smallest batch whose fixed cost `a` is at most 1 - AMORTIZED of its run: rows per ms
   * is then within 10% of the most any batch reaches (1/b). A larger batch buys at most that
   * 10% more throughput, and every request in it waits for all its rows (gathering them, running
   * them, and answering each job). On a GPU `a` is large against `b`, so this allows big batches;
   * on a CPU it allows a few dozen rows.
   */
  private amortizedRows(a: number, b: number): number {
    // The epsilon keeps a fit's rounding noise (36.0000001) from adding a row.
    return a > 0 ? Math.max(1, Math.ceil(((AMORTIZED / (1 - AMORTIZED)) * a) / b - 1e-9)) : this.max;
  }

  observe(rows: number, latencyMs: number): void {
    this.curve.observe(rows, latencyMs);
    this.samples.push({ rows, ms: latencyMs });
    if (this.samples.length > this.window) this.samples.shift();
    const n = this.samples.length;
    const mx = this.samples.reduce((s, p) => s + p.rows, 0) / n;
    const my = this.samples.reduce((s, p) => s + p.ms, 0) / n;
    let sxx = 0;
    let sxy = 0;
    for (const p of this.samples) {
      sxx += (p.rows - mx) ** 2;
      sxy += (p.rows - mx) * (p.ms - my);
    }
    if (sxx === 0) {
      // One batch size seen so far: assume its cost is all fixed until there is more. The next
      // batch may then grow and show the slope; assuming cost proportional to rows held every
      // batch to a few rows on a GPU (8 ms for one row read as 8 ms a row), and the queue of
      // small batches that followed never drained.
      if (!this.fit) this.fit = { a: my, b: 0 };
      return;
    }
    const b = Math.max(0, sxy / sxx);
    const fit = { a: Math.max(0, my - b * mx), b };
    this.fit = fit;
    // Deadlines are planned for a slow run, not the average one: where runs jitter by a third
    // (a shared CPU), a batch sized to finish on time on average finished late one time in
    // three, and p99 went with it.
    let sq = 0;
    for (const p of this.samples) sq += Math.log(p.ms / Math.max(1e-9, fit.a + fit.b * p.rows)) ** 2;
    this.slow = Math.exp(SLOW_Z * Math.sqrt(sq / n));
  }
}

export function createPolicy(spec: BatchingSpec): BatchPolicy {
  switch (spec.policy) {
    case 'aimd':
      return new AimdPolicy({ max: spec.maxBatchSize, sloMs: spec.sloMs });
    case 'predictive':
      return new PredictivePolicy({ max: spec.maxBatchSize, sloMs: spec.sloMs });
    default:
      return new FixedPolicy(spec.maxBatchSize);
  }
}
