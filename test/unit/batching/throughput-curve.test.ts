/** The throughput curve the adaptive policies cap their batches by, and the policies' use of it. */
import { describe, expect, it } from 'vitest';
import { ThroughputCurve } from '../../../core/batching/throughput-curve.ts';
import { AimdPolicy, PredictivePolicy } from '../../../core/batching/policies.ts';
import { Rng } from '../../../core/simulation/random.ts';

/** A CPU-like curve: 0.8 ms fixed, 0.075 ms a row up to 64 rows, 0.12 ms a row beyond (the rows no longer fit the caches). */
const kinked = (rows: number) => 0.8 + 0.075 * Math.min(rows, 64) + 0.12 * Math.max(0, rows - 64);

describe('ThroughputCurve', () => {
  it('sets no cap while larger batches keep running more rows per ms', () => {
    const c = new ThroughputCurve();
    const rng = new Rng(1);
    for (let i = 0; i < 400; i++) {
      const rows = 1 + Math.floor(rng.next() * 1024);
      c.observe(rows, (8 + 0.04 * rows) * rng.lognormalFactor(0.05));
    }
    expect(c.capRows()).toBeUndefined();
  });

  it('caps at the top of the fastest bucket once a larger one has run clearly slower per row', () => {
    const c = new ThroughputCurve();
    for (let i = 0; i < 4; i++) for (const rows of [8, 16, 32, 64, 128]) c.observe(rows, kinked(rows));
    // Rows per ms: 11.4 at 64 rows, 9.6 at 128: the bucket 64-90 is the fastest, and 128 ran slower.
    expect(c.fastestRows()).toBe(64);
    expect(c.capRows()).toBe(90);
  });

  it('does not read run-time jitter as a peak', () => {
    const c = new ThroughputCurve();
    const rng = new Rng(2);
    // 46 and 64 rows differ by 8% in rows per ms; runs jitter by 30%. Few samples must not stop the climb.
    for (let i = 0; i < 3; i++) for (const rows of [46, 64]) c.observe(rows, (3 + 0.3 * rows) * rng.lognormalFactor(0.3));
    expect(c.capRows()).toBeUndefined();
  });
});

describe('adaptive policies on a curve with a peak', () => {
  it('aimd does not let its limit pass the peak it has seen', () => {
    const p = new AimdPolicy({ max: 256, sloMs: 50 });
    for (let i = 0; i < 4; i++) for (const rows of [16, 32, 64, 128]) p.observe(rows, kinked(rows));
    expect(p.limit()).toBe(90);
  });

  it('predictive caps at the peak too, and never below the fastest size it has seen when the line says batching buys nothing', () => {
    const p = new PredictivePolicy({ max: 256, sloMs: 1000 });
    // Only large batches of the steep part: the line's fixed cost comes out near 0.
    for (let i = 0; i < 16; i++) for (const rows of [64, 128, 192]) p.observe(rows, kinked(rows));
    expect(p.model!.a).toBeLessThan(1);
    expect(p.limit(1000)).toBeGreaterThanOrEqual(64);
    expect(p.limit(1000)).toBeLessThanOrEqual(90);
  });

  it('predictive plans deadlines for a slow run when runs jitter', () => {
    const steady = new PredictivePolicy({ max: 256, sloMs: 50 });
    const jittery = new PredictivePolicy({ max: 256, sloMs: 50 });
    const rng = new Rng(4);
    for (let i = 0; i < 64; i++) {
      const rows = 8 + (i % 8) * 8;
      steady.observe(rows, 2 + 0.25 * rows);
      jittery.observe(rows, (2 + 0.25 * rows) * rng.lognormalFactor(0.3));
    }
    expect(steady.predictMs(32)).toBeCloseTo(10, 6);
    // exp(1.645 x ~0.3) ~ 1.6 times the fit.
    expect(jittery.predictMs(32)! / 10).toBeGreaterThan(1.4);
    expect(jittery.limit(30)).toBeLessThan(steady.limit(30));
  });

  it('predictive reads a single batch size as all fixed cost, so the next batch may grow', () => {
    const p = new PredictivePolicy({ max: 128, sloMs: 50 });
    p.observe(1, 8);
    expect(p.model).toEqual({ a: 8, b: 0 });
    expect(p.limit()).toBe(128);
  });
});
