/** Small statistics helpers for the build scripts' metrics. */

/** Complementary error function (Numerical Recipes' erfcc; relative error < 1.2e-7). */
export function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? r : 2 - r;
}

/** Upper tail of the chi-square distribution with one degree of freedom. */
export function chiSquareSurvivalDf1(statistic: number): number {
  return erfc(Math.sqrt(Math.max(0, statistic) / 2));
}

export interface ChiSquareResult {
  statistic: number;
  degreesOfFreedom: number;
  pValue: number;
  alpha: number;
  rejected: boolean;
  observed: Record<string, number>;
  expected: Record<string, number>;
}

/**
 * Pearson's goodness-of-fit test of observed counts against expected proportions.
 * Only two categories are supported (one degree of freedom), which is what the
 * binary classifier needs.
 */
export function chiSquareGoodnessOfFit(observed: Record<string, number>, proportions: Record<string, number>, alpha = 0.01): ChiSquareResult {
  const keys = Object.keys(proportions);
  if (keys.length !== 2) throw new Error('chiSquareGoodnessOfFit supports two categories');
  const n = keys.reduce((sum, k) => sum + (observed[k] ?? 0), 0);
  const expected: Record<string, number> = {};
  let statistic = 0;
  for (const k of keys) {
    expected[k] = n * proportions[k];
    const diff = (observed[k] ?? 0) - expected[k];
    statistic += (diff * diff) / expected[k];
  }
  const pValue = chiSquareSurvivalDf1(statistic);
  return { statistic, degreesOfFreedom: 1, pValue, alpha, rejected: pValue < alpha, observed: { ...observed }, expected };
}
