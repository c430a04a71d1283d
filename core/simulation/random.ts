/**
 * Seeded random numbers for the simulator: the same seed gives the same run, on any machine.
 * mulberry32 (Tommy Ettinger's 32-bit generator): small, fast, and good enough for arrival
 * times and jitter; not for anything that needs to be unpredictable.
 */
export class Rng {
  private state: number;
  private spare?: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Exponential with mean 1. */
  exponential(): number {
    return -Math.log(1 - this.next());
  }

  /** Standard normal (Box-Muller; the second value of each pair is kept for the next call). */
  normal(): number {
    if (this.spare !== undefined) {
      const z = this.spare;
      this.spare = undefined;
      return z;
    }
    const r = Math.sqrt(-2 * Math.log(1 - this.next()));
    const theta = 2 * Math.PI * this.next();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** Lognormal factor with mean 1: exp(sigma * Z - sigma^2 / 2). */
  lognormalFactor(sigma: number): number {
    return sigma > 0 ? Math.exp(sigma * this.normal() - (sigma * sigma) / 2) : 1;
  }

  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
}

/** Independent streams from one seed, one per purpose, so that changing one part of a run (the policy) leaves the others (the arrivals) as they were. */
export function streams(seed: number): { arrivals: Rng; sizes: Rng; deadlines: Rng; service: Rng } {
  const mix = (k: number) => (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(k, 0xc2b2ae35)) >>> 0;
  return { arrivals: new Rng(mix(1)), sizes: new Rng(mix(2)), deadlines: new Rng(mix(3)), service: new Rng(mix(4)) };
}
