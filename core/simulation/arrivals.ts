/**
 * When requests arrive, and what they carry. Every pattern is a Poisson process whose rate
 * follows a shape of mean 1 (`poisson`: flat; `bursty`: on/off; `ramp`: linear), times the
 * mean rate. Arrival times come from one stream of unit-rate exponentials mapped through the
 * shape's cumulative rate, so runs of one seed at two rates see the same requests, squeezed:
 * what changes between them is the load, not the luck.
 */
import type { Rng } from './random.ts';

export type ArrivalPattern =
  | { kind: 'poisson' }
  /** `factor` times the mean rate for `share` of each `cycleMs`, and the rest of the mean in between. */
  | { kind: 'bursty'; factor: number; share: number; cycleMs: number }
  /** From `from` to `to` times the rate over `overMs`, then flat at `to`. */
  | { kind: 'ramp'; from: number; to: number; overMs: number };

/** The default bursty shape: 5x the mean for 10% of every 500 ms (50 ms bursts, as long as a typical SLO). */
export const BURSTY: ArrivalPattern = { kind: 'bursty', factor: 5, share: 0.1, cycleMs: 500 };

export interface ArrivalSpec {
  pattern: ArrivalPattern;
  /** Mean arrival rate, requests per second. */
  ratePerSec: number;
  /** Rows per request, uniform in 1..maxRows. @defaultValue 1 */
  maxRows?: number;
  /** A share of requests carries its own deadline, `ms` from arrival (tighter than the SLO, as a caller's timeout). */
  deadlines?: { share: number; ms: number };
}

export interface Arrival {
  atMs: number;
  rows: number;
  deadlineMs?: number;
}

/** Checks a pattern's numbers; a shape that cannot have mean 1 is an error, not a silently different load. */
export function checkPattern(p: ArrivalPattern): void {
  if (p.kind === 'bursty' && !(p.factor >= 1 && p.share > 0 && p.factor * p.share < 1 && p.cycleMs > 0)) {
    throw new Error(
      `bursty arrivals need factor >= 1, share > 0, factor x share < 1 and cycleMs > 0 (got factor ${p.factor}, share ${p.share}, cycleMs ${p.cycleMs})`,
    );
  }
  if (p.kind === 'ramp' && !(p.from >= 0 && p.to >= 0 && p.from + p.to > 0 && p.overMs > 0)) {
    throw new Error(`ramp arrivals need from, to >= 0, not both 0, and overMs > 0 (got ${p.from}, ${p.to}, ${p.overMs})`);
  }
}

/** The shape's rate at `t` ms, as a multiple of the mean rate. */
export function shapeAt(p: ArrivalPattern, t: number): number {
  switch (p.kind) {
    case 'poisson':
      return 1;
    case 'bursty':
      return t % p.cycleMs < p.share * p.cycleMs ? p.factor : (1 - p.factor * p.share) / (1 - p.share);
    case 'ramp':
      return p.from + ((p.to - p.from) * Math.min(t, p.overMs)) / p.overMs;
  }
}

/** The time by which the shape's cumulative rate reaches `u` (in ms at rate multiple 1). */
function inverseCumulative(p: ArrivalPattern, u: number): number {
  switch (p.kind) {
    case 'poisson':
      return u;
    case 'bursty': {
      const on = p.share * p.cycleMs;
      const onArea = p.factor * on;
      const k = Math.floor(u / p.cycleMs);
      const rem = u - k * p.cycleMs;
      const off = (1 - p.factor * p.share) / (1 - p.share);
      return k * p.cycleMs + (rem < onArea ? rem / p.factor : on + (rem - onArea) / off);
    }
    case 'ramp': {
      const c = (p.to - p.from) / (2 * p.overMs);
      const atEnd = p.from * p.overMs + c * p.overMs * p.overMs;
      // The root of c t^2 + from t = u, in the form that stays exact when c is 0.
      if (u <= atEnd) return (2 * u) / (p.from + Math.sqrt(p.from * p.from + 4 * c * u));
      return p.overMs + (u - atEnd) / p.to;
    }
  }
}

/** Arrivals in time order until `untilMs`. */
export function* arrivals(spec: ArrivalSpec, untilMs: number, rng: { arrivals: Rng; sizes: Rng; deadlines: Rng }): Generator<Arrival> {
  checkPattern(spec.pattern);
  if (!(spec.ratePerSec > 0)) throw new Error(`the arrival rate must be above 0 requests/s, got ${spec.ratePerSec}`);
  const maxRows = Math.max(1, Math.floor(spec.maxRows ?? 1));
  const msPerUnit = 1000 / spec.ratePerSec;
  let unit = 0;
  for (;;) {
    unit += rng.arrivals.exponential();
    const atMs = inverseCumulative(spec.pattern, unit * msPerUnit);
    if (atMs > untilMs) return;
    const rows = maxRows > 1 ? rng.sizes.int(1, maxRows) : 1;
    const own = spec.deadlines && rng.deadlines.next() < spec.deadlines.share ? spec.deadlines.ms : undefined;
    yield own === undefined ? { atMs, rows } : { atMs, rows, deadlineMs: own };
  }
}
