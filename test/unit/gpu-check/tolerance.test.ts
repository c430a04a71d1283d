/** The GPU check's comparison of a GPU provider's outputs with the CPU's (bench/gpu-check/tolerance.ts). */
import { describe, expect, it } from 'vitest';
import { compareOutputs, TOLERANCES } from '../../../bench/gpu-check/tolerance.ts';

const tol = { atol: 1e-4, rtol: 1e-4, why: 'test' };

describe('compareOutputs', () => {
  it('passes float rounding and measures it against the allowance atol + rtol |cpu|', () => {
    const ref = [1.5, -0.25, 0.001, 2];
    const got = [1.5 + 1e-6, -0.25 - 3e-6, 0.001, 2 - 1.5e-4];
    const c = compareOutputs(ref, got, 2, tol);
    expect(c.pass).toBe(true);
    expect(c.maxAbsDiff).toBeCloseTo(1.5e-4, 9);
    // 1.5e-4 against 1e-4 + 1e-4 x 2 = 3e-4: half the allowance.
    expect(c.worstRatio).toBeCloseTo(0.5, 6);
  });

  it('fails an element past the allowance, and a NaN wherever it is', () => {
    expect(compareOutputs([1, 0], [1, 2.1e-4], 2, tol)).toMatchObject({ pass: false, labelFlips: 0 });
    const nan = compareOutputs([0.2, 0.8], [Number.NaN, 0.8], 2, tol);
    expect(nan.pass).toBe(false);
    expect(nan.worstRatio).toBe(Infinity);
  });

  it('counts a changed label as a flip when the CPU’s top two are apart, and as a tie when rounding could order them either way', () => {
    // Row 0: clear winner (class 1), the GPU picks class 0 within tolerance of nothing: a flip.
    // Row 1: classes 0 and 1 within 2 x the allowance: a tie, not a flip.
    const ref = [0.1, 0.9, 0.50001, 0.49999];
    const got = [0.95, 0.05, 0.49999, 0.50001];
    const c = compareOutputs(ref, got, 2, { atol: 1e-5, rtol: 0, why: 'test' });
    expect(c).toMatchObject({ rows: 2, labelFlips: 1, ties: 1, pass: false });
  });

  it('states a tolerance, and why, for every demo model', () => {
    for (const name of ['mlp-bench', 'spam-mlp', 'name-gender']) {
      expect(TOLERANCES[name].atol).toBeGreaterThan(0);
      expect(TOLERANCES[name].why.length).toBeGreaterThan(40);
    }
  });
});
