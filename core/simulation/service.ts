/**
 * How long a batch runs in the simulator. A profile gives the run time by batch size, either
 * as a cost model `a + b * rows` or as measured points (linear between them, and past the
 * last one along the last segment's slope). Each run's time is that, times a lognormal
 * factor of mean 1: exp(sigma * Z - sigma^2 / 2), Z standard normal, sigma from the profile
 * (measured: the spread of ln(run time) at each batch size). Run times are right-skewed like
 * that on real machines: nothing runs much faster than usual, an unlucky run much slower.
 */
import { readFileSync } from 'node:fs';
import type { Rng } from './random.ts';

export interface ProfilePoint {
  rows: number;
  /** Mean run time of one batch of `rows`, ms. */
  ms: number;
}

/** A profile as saved beside the bench results (bench/profiles/*.json). */
export interface Profile {
  name: string;
  /** Where the numbers come from: measured (how, where) or chosen (and why). */
  source: string;
  /** A cost model; used when `points` is absent. */
  cost?: { a: number; b: number };
  points?: ProfilePoint[];
  /** sigma of the lognormal run-time factor. */
  jitterSigma: number;
  /** Largest batch the profile speaks for; policies are capped there. */
  maxRows: number;
  /** Inference slots one worker replica runs, each with this profile's run times (1 for a GPU: runs on one CUDA session serialize). */
  slotsPerReplica: number;
  /** How it was measured, when it was. */
  measured?: Record<string, unknown>;
}

export interface CostShift {
  /** Virtual time at which the per-row cost changes. */
  atMs: number;
  /** Factor on the per-row cost from then on (2: a neighbour takes half the machine). */
  perRowFactor: number;
}

export class ServiceModel {
  readonly profile: Profile;
  /** The least-squares line through the profile: its fixed and per-row costs. */
  readonly fit: { a: number; b: number };
  private readonly points: ProfilePoint[];
  private readonly shift?: CostShift;

  constructor(profile: Profile, shift?: CostShift) {
    checkProfile(profile);
    this.profile = profile;
    this.shift = shift;
    this.points = profile.points ? [...profile.points].sort((x, y) => x.rows - y.rows) : [];
    this.fit = profile.points ? leastSquares(this.points) : profile.cost!;
  }

  /** Mean run time of a batch of `rows` starting at `atMs`. */
  meanMs(rows: number, atMs = 0): number {
    const base = this.points.length ? interpolate(this.points, rows) : this.fit.a + this.fit.b * rows;
    return this.shift && atMs >= this.shift.atMs ? base + (this.shift.perRowFactor - 1) * this.fit.b * rows : base;
  }

  /** One run's time: the mean times the lognormal factor. */
  sampleMs(rows: number, atMs: number, rng: Rng): number {
    return this.meanMs(rows, atMs) * rng.lognormalFactor(this.profile.jitterSigma);
  }

  /** Most rows per second one slot can run, over batch sizes up to `maxRows`, and the batch size that gives it. */
  peak(maxRows = this.profile.maxRows): { rowsPerSec: number; rows: number } {
    let best = { rowsPerSec: 0, rows: 1 };
    for (let rows = 1; rows <= maxRows; rows = rows < 8 ? rows + 1 : Math.ceil(rows * 1.1)) {
      const rowsPerSec = (1000 * rows) / this.meanMs(rows);
      if (rowsPerSec > best.rowsPerSec) best = { rowsPerSec, rows };
    }
    const last = (1000 * maxRows) / this.meanMs(maxRows);
    return last > best.rowsPerSec ? { rowsPerSec: last, rows: maxRows } : best;
  }

  describe(): string {
    const cost = `${this.fit.a.toFixed(3)} + ${this.fit.b.toFixed(4)} x rows ms`;
    const how = this.points.length ? `${this.points.length} measured points (fit ${cost})` : cost;
    return `${this.profile.name}: ${how}, lognormal jitter sigma ${this.profile.jitterSigma}`;
  }
}

function interpolate(points: ProfilePoint[], rows: number): number {
  if (points.length === 1) return (points[0].ms * rows) / points[0].rows;
  let i = 1;
  while (i < points.length - 1 && points[i].rows < rows) i++;
  const p = points[i - 1];
  const q = points[i];
  // Below the first point the first segment is followed down, but never below a tenth of its time.
  return Math.max(points[0].ms / 10, p.ms + ((q.ms - p.ms) * (rows - p.rows)) / (q.rows - p.rows));
}

function leastSquares(points: ProfilePoint[]): { a: number; b: number } {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.rows, 0) / n;
  const my = points.reduce((s, p) => s + p.ms, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.rows - mx) ** 2, 0);
  const b = sxx > 0 ? points.reduce((s, p) => s + (p.rows - mx) * (p.ms - my), 0) / sxx : my / mx;
  return { a: Math.max(0, my - b * mx), b: Math.max(0, b) };
}

/** @throws naming the field, when a profile cannot be used */
export function checkProfile(p: Profile): void {
  const errors: string[] = [];
  if (typeof p.name !== 'string' || !p.name) errors.push('name: required');
  if (typeof p.source !== 'string' || !p.source) errors.push('source: required (where the numbers come from)');
  if (p.points !== undefined) {
    if (!Array.isArray(p.points) || p.points.length === 0) errors.push('points: a non-empty list of { rows, ms }');
    else
      p.points.forEach((x, i) => {
        if (!(x.rows >= 1 && x.ms > 0)) errors.push(`points[${i}]: rows >= 1 and ms > 0 needed`);
      });
  } else if (!p.cost || !(p.cost.a >= 0 && p.cost.b >= 0 && p.cost.a + p.cost.b > 0)) {
    errors.push('cost: { a, b } with a, b >= 0 (or points) needed');
  }
  if (!(p.jitterSigma >= 0)) errors.push('jitterSigma: a number >= 0');
  if (!(p.maxRows >= 1)) errors.push('maxRows: a number >= 1');
  if (!(Number.isInteger(p.slotsPerReplica) && p.slotsPerReplica >= 1)) errors.push('slotsPerReplica: an integer >= 1');
  if (errors.length) throw new Error(`invalid profile ${p.name ?? ''}:\n${errors.map((e) => `  - ${e}`).join('\n')}`);
}

/** Reads a profile file. @throws with the file's name when it is missing, not JSON, or not a profile */
export function loadProfile(file: string): Profile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read profile ${file}: ${(e as Error).message}`);
  }
  let p: Profile;
  try {
    p = JSON.parse(text) as Profile;
  } catch (e) {
    throw new Error(`profile ${file} is not JSON: ${(e as Error).message}`);
  }
  checkProfile(p);
  return p;
}
