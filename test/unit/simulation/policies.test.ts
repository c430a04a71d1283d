/**
 * The adaptive-batching target, settled in virtual time: on the measured CPU profile and on
 * the GPU-like one, under steady and bursty arrivals, aimd and predictive (configured from the
 * SLO alone) hold at least 90% of the rate the best fixed configuration holds within the SLO,
 * that configuration chosen per scenario with hindsight over maxBatchSize x maxDelayMs.
 * `npm run simulate` prints the ratios themselves.
 */
import { describe, expect, it } from 'vitest';
import { adaptive, label } from '../../../core/simulation/configurations.ts';
import { CPU_PROFILE, GPU_PROFILE, scenario, SLO_MS, type PatternName } from '../../../core/simulation/scenarios.ts';
import { bestFixed, runSpec } from '../../../core/simulation/search.ts';
import { simulate } from '../../../core/simulation/simulate.ts';

const cases: [string, PatternName, string][] = [
  ['the measured CPU profile', 'steady', CPU_PROFILE],
  ['the measured CPU profile', 'bursty', CPU_PROFILE],
  ['the GPU-like profile', 'steady', GPU_PROFILE],
  ['the GPU-like profile', 'bursty', GPU_PROFILE],
];

describe.each(cases)('on %s, %s arrivals', (_name, pattern, file) => {
  const s = scenario(file, pattern);
  let best: Awaited<ReturnType<typeof bestFixed>>['best'];

  it('the best fixed configuration of the grid holds some rate within the SLO', async () => {
    ({ best } = await bestFixed(s));
    expect(best.sustained.ratePerSec).toBeGreaterThan(0);
    expect(best.sustained.result!.p99).toBeLessThanOrEqual(SLO_MS);
  });

  it.each(['aimd', 'predictive'] as const)('%s holds 90% of that rate within the SLO', async (policy) => {
    const rate = 0.9 * best.sustained.ratePerSec;
    const r = await simulate(runSpec(s, adaptive(policy, SLO_MS, s.service.profile.maxRows), rate));
    expect(
      r.p99,
      `${policy} at ${rate.toFixed(0)} requests/s (best fixed: ${label(best.batching)} at ${best.sustained.ratePerSec.toFixed(0)})`,
    ).toBeLessThanOrEqual(SLO_MS);
    expect(r.withinSlo).toBe(true);
  });
});
