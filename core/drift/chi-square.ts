/**
 * Pearson's chi-square goodness-of-fit test with k categories, for the drift monitor: do
 * the classes a model predicted on recent traffic follow its training distribution?
 */

/** ln Γ(x), Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for x > 0. */
function lnGamma(x: number): number {
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Regularized upper incomplete gamma Q(a, x) (Numerical Recipes: series below a + 1, continued fraction above). */
export function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  if (x < a + 1) {
    let sum = 1 / a;
    let term = sum;
    for (let n = 1; n < 500; n++) {
      term *= x / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * 1e-15) break;
    }
    return 1 - sum * Math.exp(-x + a * Math.log(x) - lnGamma(a));
  }
  let b = x + 1 - a;
  let c = 1 / 1e-300;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 500; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < 1e-300) d = 1e-300;
    c = b + an / c;
    if (Math.abs(c) < 1e-300) c = 1e-300;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) break;
  }
  return Math.exp(-x + a * Math.log(x) - lnGamma(a)) * h;
}

export interface ChiSquareResult {
  statistic: number;
  degreesOfFreedom: number;
  pValue: number;
  samples: number;
  observed: Record<string, number>;
  expected: Record<string, number>;
}

/** Tests observed counts against expected proportions (which are renormalised over the given labels). */
export function chiSquareTest(observed: Record<string, number>, proportions: Record<string, number>): ChiSquareResult {
  const labels = Object.keys(proportions).filter((l) => proportions[l] > 0);
  const total = labels.reduce((s, l) => s + proportions[l], 0);
  const n = labels.reduce((s, l) => s + (observed[l] ?? 0), 0);
  const expected: Record<string, number> = {};
  let statistic = 0;
  for (const l of labels) {
    expected[l] = (n * proportions[l]) / total;
    if (expected[l] > 0) statistic += ((observed[l] ?? 0) - expected[l]) ** 2 / expected[l];
  }
  const df = Math.max(1, labels.length - 1);
  return {
    statistic,
    degreesOfFreedom: df,
    pValue: n === 0 ? 1 : gammaQ(df / 2, statistic / 2),
    samples: n,
    observed: { ...observed },
    expected,
  };
}
