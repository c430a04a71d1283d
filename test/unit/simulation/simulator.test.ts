/**
 * The simulator itself: seeded arrivals and run times, and the real Batcher driven on a
 * ManualClock. Everything here is virtual time: no test waits on the wall clock.
 */
import { describe, expect, it } from 'vitest';
import { arrivals, checkPattern, type ArrivalSpec } from '../../../core/simulation/arrivals.ts';
import { Rng, streams } from '../../../core/simulation/random.ts';
import { runSpec, sustainableRate, type Scenario } from '../../../core/simulation/search.ts';
import { checkProfile, loadProfile, ServiceModel, type Profile } from '../../../core/simulation/service.ts';
import { simulate, type SimulationSpec } from '../../../core/simulation/simulate.ts';
import type { BatchingSpec } from '../../../core/models/config.ts';

const linear = (a: number, b: number, sigma = 0): Profile => ({
  name: 'linear',
  source: 'test',
  cost: { a, b },
  jitterSigma: sigma,
  maxRows: 256,
  slotsPerReplica: 1,
});
const fixed = (maxBatchSize: number, maxDelayMs: number): BatchingSpec => ({ policy: 'fixed', maxBatchSize, maxDelayMs, sloMs: 50 });

function spec(over: Partial<SimulationSpec> & { ratePerSec?: number } = {}): SimulationSpec {
  const { ratePerSec = 1000, ...rest } = over;
  return {
    batching: fixed(32, 5),
    slots: 1,
    service: new ServiceModel(linear(1, 0.05, 0.1)),
    arrivals: { pattern: { kind: 'poisson' }, ratePerSec },
    durationMs: 5000,
    warmupMs: 500,
    sloMs: 50,
    seed: 7,
    ...rest,
  };
}

const all = (a: ArrivalSpec, untilMs: number, seed = 1) => [...arrivals(a, untilMs, streams(seed))];

describe('arrivals', () => {
  it('Poisson: the count over 20 s is within 4 standard deviations of rate x time', () => {
    const n = all({ pattern: { kind: 'poisson' }, ratePerSec: 1000 }, 20_000).length;
    expect(Math.abs(n - 20_000)).toBeLessThan(4 * Math.sqrt(20_000));
  });

  it('one seed at twice the rate gives the same requests at half the times', () => {
    const slow = all({ pattern: { kind: 'poisson' }, ratePerSec: 500 }, 2000);
    const fast = all({ pattern: { kind: 'poisson' }, ratePerSec: 1000 }, 1000);
    expect(fast.length).toBe(slow.length);
    fast.forEach((a, i) => expect(a.atMs).toBeCloseTo(slow[i].atMs / 2, 9));
  });

  it('bursty: half the requests arrive in the 10% of the time at 5x the mean, and the mean holds', () => {
    const pattern = { kind: 'bursty' as const, factor: 5, share: 0.1, cycleMs: 500 };
    const got = all({ pattern, ratePerSec: 2000 }, 50_000);
    const inBursts = got.filter((a) => a.atMs % 500 < 50).length;
    expect(inBursts / got.length).toBeGreaterThan(0.48);
    expect(inBursts / got.length).toBeLessThan(0.52);
    expect(Math.abs(got.length - 100_000)).toBeLessThan(4 * Math.sqrt(100_000));
  });

  it('ramp: from half to one and a half times the rate, the second half of the ramp carries 5/8 of its requests', () => {
    const got = all({ pattern: { kind: 'ramp', from: 0.5, to: 1.5, overMs: 20_000 }, ratePerSec: 1000 }, 20_000);
    const second = got.filter((a) => a.atMs >= 10_000).length;
    expect(Math.abs(got.length - 20_000)).toBeLessThan(4 * Math.sqrt(20_000));
    expect(second / got.length).toBeCloseTo(0.625, 1);
  });

  it('sizes are uniform in 1..maxRows, and a share of requests carries its own deadline', () => {
    const got = all({ pattern: { kind: 'poisson' }, ratePerSec: 1000, maxRows: 4, deadlines: { share: 0.2, ms: 10 } }, 20_000);
    expect(Math.min(...got.map((a) => a.rows))).toBe(1);
    expect(Math.max(...got.map((a) => a.rows))).toBe(4);
    expect(got.reduce((s, a) => s + a.rows, 0) / got.length).toBeCloseTo(2.5, 1);
    expect(got.filter((a) => a.deadlineMs === 10).length / got.length).toBeCloseTo(0.2, 1);
  });

  it('rejects shapes that cannot have the mean rate, naming the numbers', () => {
    expect(() => checkPattern({ kind: 'bursty', factor: 5, share: 0.3, cycleMs: 500 })).toThrow(/factor x share < 1 .*factor 5, share 0.3/);
    expect(() => checkPattern({ kind: 'ramp', from: 0, to: 0, overMs: 10 })).toThrow(/not both 0/);
    expect(() => all({ pattern: { kind: 'poisson' }, ratePerSec: 0 }, 10)).toThrow(/above 0 requests\/s/);
  });
});

describe('run times', () => {
  it('a measured profile: its points exactly, linear between them, the last slope beyond', () => {
    const m = new ServiceModel({
      name: 'm',
      source: 'test',
      points: [
        { rows: 1, ms: 1 },
        { rows: 8, ms: 2 },
        { rows: 64, ms: 9 },
      ],
      jitterSigma: 0,
      maxRows: 128,
      slotsPerReplica: 1,
    });
    expect(m.meanMs(8)).toBe(2);
    expect(m.meanMs(36)).toBeCloseTo(5.5, 9);
    expect(m.meanMs(128)).toBeCloseTo(17, 9);
  });

  it('the lognormal jitter has mean 1 and the stated spread of ln', () => {
    const rng = new Rng(3);
    const xs = Array.from({ length: 50_000 }, () => rng.lognormalFactor(0.3));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    const logs = xs.map(Math.log);
    const lm = logs.reduce((s, x) => s + x, 0) / logs.length;
    const sd = Math.sqrt(logs.reduce((s, x) => s + (x - lm) ** 2, 0) / logs.length);
    expect(mean).toBeCloseTo(1, 2);
    expect(sd).toBeCloseTo(0.3, 2);
  });

  it('a cost shift doubles the per-row part from its moment on, and leaves the fixed part', () => {
    const m = new ServiceModel(linear(8, 0.04), { atMs: 100, perRowFactor: 2 });
    expect(m.meanMs(100, 99)).toBeCloseTo(12, 9);
    expect(m.meanMs(100, 100)).toBeCloseTo(16, 9);
  });

  it('a profile that cannot be used is refused with every field named', () => {
    expect(() => checkProfile({ name: 'x', source: '', jitterSigma: -1, maxRows: 0, slotsPerReplica: 1.5 } as Profile)).toThrow(
      /source: required[\s\S]*cost: \{ a, b \}[\s\S]*jitterSigma[\s\S]*maxRows[\s\S]*slotsPerReplica/,
    );
    expect(() => loadProfile('/no/such/profile.json')).toThrow(/cannot read profile \/no\/such\/profile.json/);
  });

  it('the shipped profiles load', () => {
    for (const f of ['mlp-bench-cpu.json', 'gpu-like.json'])
      expect(loadProfile(new URL(`../../../bench/profiles/${f}`, import.meta.url).pathname).source.length).toBeGreaterThan(20);
  });
});

describe('a run through the real Batcher', () => {
  it('is the same every time for one seed, and differs for another', async () => {
    const a = await simulate(spec());
    expect(await simulate(spec())).toEqual(a);
    expect((await simulate(spec({ seed: 8 }))).p99).not.toBe(a.p99);
  });

  it('at low load, fixed batches close on timeout and a request waits at most maxDelayMs before its run', async () => {
    const r = await simulate(spec({ ratePerSec: 100 }));
    expect(r.closeReasons.timeout).toBe(r.batches);
    expect(r.waitMs.p99).toBeLessThanOrEqual(5 + 1e-9);
    expect(r.requestsPerSec).toBeCloseTo(100, -1);
    expect(r.deadlineMisses).toBe(0);
  });

  it('under load, fixed batches close full at maxBatchSize, and none is larger', async () => {
    const r = await simulate(spec({ ratePerSec: 15_000, batching: fixed(16, 5) }));
    expect(r.batchRows.max).toBe(16);
    expect(r.closeReasons.full).toBeGreaterThan(0.9 * r.batches);
    expect(r.batchSizes['9-16']).toBeGreaterThan(0.9 * r.batches);
  });

  it('predictive goes early to a free slot at low load (idle), aimd at once', async () => {
    const p = await simulate(spec({ ratePerSec: 100, batching: { policy: 'predictive', maxBatchSize: 64, maxDelayMs: 25, sloMs: 50 } }));
    expect(p.closeReasons.idle).toBeGreaterThan(0.95 * p.batches);
    const a = await simulate(spec({ ratePerSec: 100, batching: { policy: 'aimd', maxBatchSize: 64, maxDelayMs: 25, sloMs: 25 } }));
    expect(a.closeReasons.idle).toBeGreaterThan(0.95 * a.batches);
    expect(a.p50).toBeLessThan(3);
  });

  it('per-request deadlines: under load predictive closes batches for them, and misses far fewer than a fixed configuration that waits 20 ms', async () => {
    const arrivals: ArrivalSpec = { pattern: { kind: 'poisson' }, ratePerSec: 12_000, deadlines: { share: 0.2, ms: 6 } };
    const p = await simulate(spec({ arrivals, batching: { policy: 'predictive', maxBatchSize: 256, maxDelayMs: 25, sloMs: 50 } }));
    const f = await simulate(spec({ arrivals, batching: fixed(256, 20) }));
    expect(p.closeReasons.deadline).toBeGreaterThan(0);
    expect(f.deadlineMisses).toBeGreaterThan(0.15 * f.requests);
    expect(p.deadlineMisses).toBeLessThan(f.deadlineMisses / 10);
  });

  it('stops early once the SLO is clearly lost, and says so', async () => {
    const r = await simulate({ ...spec({ ratePerSec: 50_000 }), stopWhenOverSlo: true });
    expect(r.stoppedEarly).toBe(true);
    expect(r.withinSlo).toBe(false);
  });
});

describe('the search for the rate held within the SLO', () => {
  it('finds a rate that holds, with the next step up (1% of the ceiling) failing', async () => {
    const s: Scenario = {
      service: new ServiceModel(linear(1, 0.05, 0.1)),
      slots: 1,
      pattern: { kind: 'poisson' },
      sloMs: 20,
      requests: 5000,
    };
    const b = fixed(32, 5);
    const found = await sustainableRate(s, b);
    expect(found.ratePerSec).toBeGreaterThan(0);
    expect(found.result!.p99).toBeLessThanOrEqual(20);
    const above = await simulate(runSpec(s, b, found.ratePerSec + 0.02 * (32 / (1 + 0.05 * 32)) * 1000));
    expect(above.withinSlo).toBe(false);
  });
});
