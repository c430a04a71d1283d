/**
 * The per-row cost doubles mid-run (a neighbour takes half the machine), on the GPU-like
 * profile at half the rate the best fixed configuration held before: that configuration,
 * chosen with hindsight for the old cost, misses the SLO after the shift; aimd and predictive
 * are back within it (every later window of 50 batches with at most 1% of requests late)
 * within 60 batches. On the measured CPU profile the shift takes every configuration below
 * that rate, so there is nothing to tell them apart by (see bench/SIMULATION.md).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { adaptive, label } from '../../../core/simulation/configurations.ts';
import { GPU_PROFILE, scenario, SLO_MS } from '../../../core/simulation/scenarios.ts';
import { bestFixed, type FixedCandidate } from '../../../core/simulation/search.ts';
import { shiftRun } from '../../../core/simulation/shift.ts';

/** Batches after the shift within which the adaptive policies are back within the SLO. */
const RECOVERED_WITHIN = 60;

describe('a mid-run doubling of the per-row cost, GPU-like profile', () => {
  const s = { ...scenario(GPU_PROFILE, 'steady'), requests: 40_000 };
  let best: FixedCandidate;
  let rate: number;

  beforeAll(async () => {
    ({ best } = await bestFixed(s));
    rate = 0.5 * best.sustained.ratePerSec;
  });

  it('the fixed configuration that was best before misses the SLO after it', async () => {
    const o = await shiftRun(s, best.batching, rate, { perRowFactor: 2 });
    expect(o.beforeP99, label(best.batching)).toBeLessThanOrEqual(SLO_MS);
    expect(o.afterP99, label(best.batching)).toBeGreaterThan(SLO_MS);
    expect(o.recoveryBatches).toBeUndefined();
  });

  it.each(['aimd', 'predictive'] as const)(`%s is back within the SLO within ${RECOVERED_WITHIN} batches`, async (policy) => {
    const o = await shiftRun(s, adaptive(policy, SLO_MS, s.service.profile.maxRows), rate, { perRowFactor: 2 });
    expect(o.beforeP99).toBeLessThanOrEqual(SLO_MS);
    expect(o.recoveryBatches).toBeDefined();
    expect(o.recoveryBatches!).toBeLessThanOrEqual(RECOVERED_WITHIN);
    // The batches grew to carry the same rate at the higher cost.
    expect(o.rowsEnd).toBeGreaterThan(o.rowsBefore);
  });
});
