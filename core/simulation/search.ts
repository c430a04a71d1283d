/**
 * Searches over simulated runs: the highest arrival rate a configuration holds within the
 * SLO (bisection), and the best fixed configuration over a grid of maxBatchSize x maxDelayMs,
 * chosen with hindsight for one scenario.
 */
import type { BatchingSpec } from '../models/config.ts';
import type { ArrivalPattern, ArrivalSpec } from './arrivals.ts';
import type { ServiceModel } from './service.ts';
import { simulate, type SimulationResult, type SimulationSpec } from './simulate.ts';

/** What a configuration is judged on: everything but the policy and the rate. */
export interface Scenario {
  service: ServiceModel;
  slots: number;
  pattern: ArrivalPattern;
  sloMs: number;
  maxRows?: number;
  deadlines?: ArrivalSpec['deadlines'];
  /** Mean requests per run; the run lasts that long at the rate tried. @defaultValue 20000 */
  requests?: number;
  /** Shortest run, so that a bursty pattern's cycles repeat often enough. @defaultValue 10 cycles of a bursty pattern, else 0 */
  minDurationMs?: number;
  seed?: number;
}

export interface Sustained {
  /** Highest rate (requests/s) found within the SLO; 0 when not even the lowest rate tried held it. */
  ratePerSec: number;
  /** The run at that rate. */
  result?: SimulationResult;
  runs: number;
}

/** The spec of one run of a scenario at a rate. */
export function runSpec(s: Scenario, batching: BatchingSpec, ratePerSec: number): SimulationSpec {
  const minMs = s.minDurationMs ?? (s.pattern.kind === 'bursty' ? 10 * s.pattern.cycleMs : 0);
  const durationMs = Math.max(minMs, ((s.requests ?? 20_000) * 1000) / ratePerSec);
  return {
    batching,
    slots: s.slots,
    service: s.service,
    arrivals: { pattern: s.pattern, ratePerSec, maxRows: s.maxRows, deadlines: s.deadlines },
    durationMs,
    warmupMs: durationMs / 10,
    sloMs: s.sloMs,
    seed: s.seed ?? 1,
  };
}

/** Requests per second the scenario's slots could run at best: no configuration holds more. */
export function ceilingRate(s: Scenario, maxBatchSize: number): number {
  const meanRows = ((s.maxRows ?? 1) + 1) / 2;
  return (s.slots * s.service.peak(Math.min(maxBatchSize, s.service.profile.maxRows)).rowsPerSec) / meanRows;
}

/**
 * The highest rate whose run keeps p99 within the SLO, to `tolerance` of the ceiling, by
 * bisection above `atLeast` (a rate known, or assumed, to hold). Runs at nearby rates see the
 * same requests squeezed (see arrivals.ts), so the verdict moves with the rate, not with luck.
 */
export async function sustainableRate(
  s: Scenario,
  batching: BatchingSpec,
  options: { tolerance?: number; atLeast?: number } = {},
): Promise<Sustained> {
  const ceiling = ceilingRate(s, batching.maxBatchSize);
  const step = ceiling * (options.tolerance ?? 0.01);
  let lo = options.atLeast ?? 0;
  let hi = ceiling;
  let best: SimulationResult | undefined;
  let runs = 0;
  const holds = async (rate: number): Promise<SimulationResult | undefined> => {
    runs++;
    const r = await simulate({ ...runSpec(s, batching, rate), stopWhenOverSlo: true });
    return r.withinSlo ? r : undefined;
  };
  if (lo > 0) {
    best = await holds(lo);
    if (!best) return { ratePerSec: 0, runs };
  }
  while (hi - lo > step) {
    const mid = (lo + hi) / 2;
    const r = await holds(mid);
    if (r) {
      lo = mid;
      best = r;
    } else hi = mid;
  }
  return { ratePerSec: best ? lo : 0, result: best, runs };
}

export interface FixedCandidate {
  batching: BatchingSpec;
  sustained: Sustained;
}

/** Delays of the fixed grid, ms; those below the SLO are tried. */
export const GRID_DELAYS = [0.5, 1, 2, 5, 10, 20, 50];

/**
 * The grid of fixed configurations: batch sizes in powers of two up to the profile's largest,
 * by delays below the SLO. Largest first: big batches usually hold the most, and a good
 * best found early lets the rest of the grid cost one run each.
 */
export function fixedGrid(s: Scenario, delays = GRID_DELAYS): BatchingSpec[] {
  const sizes: number[] = [];
  for (let b = 1; b <= s.service.profile.maxRows; b *= 2) sizes.unshift(b);
  const ds = delays.filter((d) => d < s.sloMs).sort((x, y) => y - x);
  return sizes.flatMap((maxBatchSize) => ds.map((maxDelayMs) => ({ policy: 'fixed' as const, maxBatchSize, maxDelayMs, sloMs: s.sloMs })));
}

/**
 * The best fixed configuration of the grid for this scenario, with hindsight. A configuration
 * is first tried at the best rate found so far, and searched further only if it holds there;
 * one whose ceiling is below that rate is not run. The best is exact as far as the verdict is
 * monotone in the rate, and most of the grid costs one run or none.
 */
export async function bestFixed(
  s: Scenario,
  grid = fixedGrid(s),
  options: { tolerance?: number } = {},
): Promise<{ best: FixedCandidate; tried: number; runs: number }> {
  let best: FixedCandidate | undefined;
  let runs = 0;
  for (const batching of grid) {
    // A batch size whose ceiling is below the best so far cannot beat it: no run needed.
    if (best && ceilingRate(s, batching.maxBatchSize) <= best.sustained.ratePerSec) continue;
    const sustained = await sustainableRate(s, batching, { tolerance: options.tolerance, atLeast: best?.sustained.ratePerSec });
    runs += sustained.runs;
    if (sustained.ratePerSec > (best?.sustained.ratePerSec ?? 0)) best = { batching, sustained };
  }
  if (!best) throw new Error('no fixed configuration of the grid holds the SLO at any rate');
  return { best, tried: grid.length, runs };
}

/** Runs at each rate, to the end (no early stop): p99 against offered load, for plots. */
export async function sweep(s: Scenario, batching: BatchingSpec, rates: number[]): Promise<SimulationResult[]> {
  const out: SimulationResult[] = [];
  for (const rate of rates) out.push(await simulate(runSpec(s, batching, rate)));
  return out;
}
