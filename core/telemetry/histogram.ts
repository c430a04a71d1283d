/** Histogram maths shared by the operations view and the rollout comparisons: no Redis, no metrics registry. */

/** One bucket of a cumulative histogram: how many observations were at most `le`. */
export interface CumulativeBucket {
  le: number;
  count: number;
}

/**
 * The q-quantile of a histogram, interpolated linearly inside its bucket as Prometheus'
 * `histogram_quantile` does (the lowest bucket starts at 0; a quantile in the +Inf bucket is
 * the highest finite bound). Undefined without observations.
 */
export function histogramQuantile(q: number, buckets: readonly CumulativeBucket[]): number | undefined {
  const total = buckets.at(-1)?.count ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  let lowerLe = 0;
  let lowerCount = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lowerLe;
      if (b.count === lowerCount) return b.le;
      return lowerLe + ((b.le - lowerLe) * (rank - lowerCount)) / (b.count - lowerCount);
    }
    lowerLe = b.le;
    lowerCount = b.count;
  }
  return lowerLe;
}
