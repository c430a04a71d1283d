/**
 * A cost shift mid-run: from `atMs` on, every row costs `perRowFactor` times as much (as when a
 * neighbour takes half the machine). How a configuration fares after it, and how many batches
 * an adaptive one needs to be back within the SLO.
 */
import type { BatchingSpec } from '../models/config.ts';
import { runSpec, type Scenario } from './search.ts';
import { ServiceModel, type CostShift } from './service.ts';
import { percentile, simulate, type BatchRecord } from './simulate.ts';

/** Batches per window when judging recovery, and the share of a window's requests that may be late (the p99's 1%). */
export const RECOVERY_WINDOW = 50;

export interface ShiftOutcome {
  /** p99 of the requests of batches that started before the shift (after the warm-up), and after it. */
  beforeP99: number;
  afterP99: number;
  /** Batches started after the shift until every later window of RECOVERY_WINDOW batches has at most 1% late requests; undefined if it never gets there. */
  recoveryBatches?: number;
  batchesAfter: number;
  /** Mean batch size before the shift and over the last window. */
  rowsBefore: number;
  rowsEnd: number;
}

export async function shiftRun(
  s: Scenario,
  batching: BatchingSpec,
  ratePerSec: number,
  shift: Omit<CostShift, 'atMs'> & { atShare?: number },
): Promise<ShiftOutcome> {
  const base = runSpec(s, batching, ratePerSec);
  const atMs = base.durationMs * (shift.atShare ?? 0.5);
  const service = new ServiceModel(s.service.profile, { atMs, perRowFactor: shift.perRowFactor });
  const r = await simulate({ ...base, service, keepBatches: true });
  const log = r.batchLog!;
  const before = log.filter((b) => b.startMs >= base.warmupMs && b.startMs < atMs);
  const after = log.filter((b) => b.startMs >= atMs);
  return {
    beforeP99: p99Of(before),
    afterP99: p99Of(after),
    recoveryBatches: recovery(after),
    batchesAfter: after.length,
    rowsBefore: mean(before.map((b) => b.rows)),
    rowsEnd: mean(after.slice(-RECOVERY_WINDOW).map((b) => b.rows)),
  };
}

function p99Of(batches: BatchRecord[]): number {
  return percentile(Float64Array.from(batches.flatMap((b) => b.latencies)).sort(), 99);
}

function recovery(after: BatchRecord[]): number | undefined {
  let from: number | undefined;
  for (let i = after.length - RECOVERY_WINDOW; i >= 0; i--) {
    const window = after.slice(i, i + RECOVERY_WINDOW);
    const requests = window.reduce((n, b) => n + b.latencies.length, 0);
    const late = window.reduce((n, b) => n + b.late, 0);
    if (late > requests / 100) break;
    from = i;
  }
  return from;
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
