/** The chi-square goodness-of-fit test as the model build records it: core/drift/chi-square.ts plus a verdict at `alpha`. */
import { chiSquareTest, type ChiSquareResult } from '../../core/drift/chi-square.ts';

export interface ChiSquareVerdict extends ChiSquareResult {
  alpha: number;
  rejected: boolean;
}

/** Pearson's goodness-of-fit test of observed counts against expected proportions. */
export function chiSquareGoodnessOfFit(observed: Record<string, number>, proportions: Record<string, number>, alpha = 0.01): ChiSquareVerdict {
  const test = chiSquareTest(observed, proportions);
  return { ...test, alpha, rejected: test.pValue < alpha };
}
