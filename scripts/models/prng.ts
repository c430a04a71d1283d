/**
 * Seeded pseudo-random numbers for the model build scripts: the same seed gives the
 * same split, the same initial weights and the same minibatch order on every machine.
 */

/** mulberry32: a small, fast 32-bit generator. Returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box-Muller) drawn from a uniform generator. */
export function gaussian(uniform: () => number): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    let u = 0;
    while (u === 0) u = uniform();
    const v = uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

/** Fisher-Yates shuffle, in place. */
export function shuffleInPlace<T>(items: T[], uniform: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(uniform() * (i + 1));
    const tmp = items[i];
    items[i] = items[j];
    items[j] = tmp;
  }
  return items;
}

/**
 * A seeded, stratified split: each class's rows (already in a fixed order) are shuffled and
 * the first `fraction` of them held out; then both sides are shuffled so neither is ordered
 * by class. The order of the draws is part of the result: changing it changes the models.
 */
export function stratifiedSplit<L extends string, R>(classes: readonly (readonly [L, R[]])[], fraction: number, uniform: () => number): { train: R[]; holdout: R[]; counts: { train: Record<L, number>; holdout: Record<L, number> } } {
  const train: R[] = [];
  const holdout: R[] = [];
  const counts = { train: {} as Record<L, number>, holdout: {} as Record<L, number> };
  for (const [label, rows] of classes) {
    shuffleInPlace(rows, uniform);
    const nHoldout = Math.round(rows.length * fraction);
    holdout.push(...rows.slice(0, nHoldout));
    train.push(...rows.slice(nHoldout));
    counts.holdout[label] = nHoldout;
    counts.train[label] = rows.length - nHoldout;
  }
  shuffleInPlace(train, uniform);
  shuffleInPlace(holdout, uniform);
  return { train, holdout, counts };
}
