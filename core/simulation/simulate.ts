/**
 * One simulated run: seeded arrivals into the real Batcher, on a ManualClock, with batches
 * run by a service model instead of onnxruntime. The clock is the only event queue: each
 * arrival and each batch's end is a timer on it beside the Batcher's own, and the run steps
 * from one due timer to the next. After a batch ends, the loop lets the event loop turn once
 * so the Batcher's promise callbacks (answer the requests, free the slot, start the next
 * batch) run at that virtual instant, before time moves on.
 */
import { Batcher, type BatchEvent, type CloseReason } from '../batching/batcher.ts';
import { ManualClock } from '../batching/clock.ts';
import type { NormalizedInput } from '../prediction/input.ts';
import type { BatchingSpec } from '../models/config.ts';
import type { RunResult } from '../runtime/inference-pool.ts';
import { arrivals, type Arrival, type ArrivalSpec } from './arrivals.ts';
import { streams } from './random.ts';
import type { ServiceModel } from './service.ts';

export interface SimulationSpec {
  batching: BatchingSpec;
  /** Batches that may run at once (the Batcher's `slots`). */
  slots: number;
  service: ServiceModel;
  arrivals: ArrivalSpec;
  /** Arrivals stop after this much virtual time; the run goes on until every request is answered. */
  durationMs: number;
  /** Requests that arrive before this are served but not counted: the policies learn meanwhile. */
  warmupMs: number;
  /** The latency objective a run is judged by: p99 from arrival to answer. */
  sloMs: number;
  seed: number;
  /** Stop as soon as more than 1% of the counted requests are known to miss the SLO (a search needs only the verdict). */
  stopWhenOverSlo?: boolean;
  /** Keep every batch (start, rows, run time, limit, its requests' latencies), for time lines. */
  keepBatches?: boolean;
}

export interface BatchRecord {
  startMs: number;
  rows: number;
  runMs: number;
  limit: number;
  reason: CloseReason;
  /** Longest arrival-to-answer latency among its requests. */
  worstMs: number;
  /** Its requests' arrival-to-answer latencies. */
  latencies: number[];
  /** Its requests answered after the SLO. */
  late: number;
}

export interface SimulationResult {
  offeredPerSec: number;
  /** Requests counted (arrived after the warm-up). */
  requests: number;
  rowsPerSec: number;
  requestsPerSec: number;
  p50: number;
  p95: number;
  p99: number;
  /** Time from arrival to the start of the request's batch: gathering plus waiting for a slot. */
  waitMs: { mean: number; p99: number };
  withinSlo: boolean;
  /** Requests answered after their own deadline, or after the SLO when they carry none. */
  deadlineMisses: number;
  /** Batches that started after the warm-up. */
  batches: number;
  batchRows: { mean: number; p50: number; p95: number; max: number };
  /** Batches (after the warm-up) by size, in power-of-two buckets: `"17-32": 120`. */
  batchSizes: Record<string, number>;
  closeReasons: Record<CloseReason, number>;
  /** The run stopped early: the SLO was already missed. Figures then cover what was answered. */
  stoppedEarly: boolean;
  batchLog?: BatchRecord[];
}

const MODEL = 'sim@1';
const blanks: string[][] = [];
/** Rows of a request whose identity nobody asks for: one shared array per size (the Batcher only reads them). */
const blank = (rows: number): string[] => (blanks[rows] ??= new Array<string>(rows).fill(''));
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A percentile of sorted values (nearest rank, as the bench reads it). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function bucket(rows: number): string {
  if (rows <= 2) return String(rows);
  const hi = 2 ** Math.ceil(Math.log2(rows));
  return `${hi / 2 + 1}-${hi}`;
}

export async function simulate(spec: SimulationSpec): Promise<SimulationResult> {
  const clock = new ManualClock();
  const rng = streams(spec.seed);
  let ended = false;
  // Each request's rows carry its number as text, so a batch's run knows whose rows it holds.
  const batchOf: number[] = [];
  const log: BatchRecord[] = [];
  const run = (_model: string, input: NormalizedInput): Promise<RunResult> => {
    const texts = input.kind === 'text' ? input.texts : [];
    const ms = spec.service.sampleMs(texts.length, clock.now(), rng.service);
    if (spec.keepBatches) {
      for (const t of texts) batchOf[Number(t)] = log.length;
      log.push({
        startMs: clock.now(),
        rows: texts.length,
        runMs: ms,
        limit: batcher.policy(MODEL).limit(),
        reason: 'full',
        worstMs: 0,
        latencies: [],
        late: 0,
      });
    }
    return new Promise((resolve) => {
      clock.setTimer(() => {
        ended = true;
        // No outputs: the Batcher would slice them per request, and nobody reads them here.
        resolve({ outputs: [], inferenceMs: ms, rows: texts.length });
      }, ms);
    });
  };
  const events: BatchEvent[] = [];
  // Batches counted as requests are: those that started after the warm-up.
  const onBatch = (e: BatchEvent): void => void (clock.now() - e.latencyMs >= spec.warmupMs && events.push(e));
  const batcher = new Batcher({ run, spec: () => spec.batching, slots: spec.slots, clock, onBatch });

  const latencies: number[] = [];
  const waits: number[] = [];
  let rows = 0;
  let misses = 0;
  let unanswered = 0;
  let late = 0;
  const expected = (spec.arrivals.ratePerSec * Math.max(0, spec.durationMs - spec.warmupMs)) / 1000;
  const lateLimit = Math.max(1, Math.floor(expected / 100));

  let ids = 0;
  const submit = (a: Arrival): void => {
    const counted = a.atMs >= spec.warmupMs;
    const arrivedAt = clock.now();
    const id = ids++;
    unanswered++;
    const input: NormalizedInput = { kind: 'text', texts: spec.keepBatches ? new Array<string>(a.rows).fill(String(id)) : blank(a.rows) };
    void batcher.submit(MODEL, input, a.rows, a.deadlineMs).then((o) => {
      unanswered--;
      const latency = clock.now() - arrivedAt;
      if (spec.keepBatches) {
        const b = log[batchOf[id]];
        b.worstMs = Math.max(b.worstMs, latency);
        b.reason = o.closeReason;
        b.latencies.push(latency);
        if (latency > spec.sloMs) b.late++;
      }
      if (!counted) return;
      latencies.push(latency);
      waits.push(latency - o.inferenceMs);
      rows += a.rows;
      if (latency > (a.deadlineMs ?? spec.sloMs)) misses++;
      if (latency > spec.sloMs) late++;
    });
  };

  const source = arrivals(spec.arrivals, spec.durationMs, rng);
  const next = (): void => {
    const a = source.next();
    if (a.done) return;
    clock.setTimer(() => {
      submit(a.value);
      next();
    }, a.value.atMs - clock.now());
  };
  next();

  let stoppedEarly = false;
  for (;;) {
    const at = clock.nextAt();
    if (at === undefined) {
      await turn();
      if (clock.nextAt() === undefined) break;
      continue;
    }
    clock.advanceTo(at);
    if (ended) {
      ended = false;
      await turn();
    }
    if (spec.stopWhenOverSlo && late > lateLimit) {
      stoppedEarly = true;
      break;
    }
  }
  if (!stoppedEarly && unanswered > 0) throw new Error(`simulation stalled with ${unanswered} requests unanswered at ${clock.now()} ms`);

  const sorted = Float64Array.from(latencies).sort();
  const sortedWaits = Float64Array.from(waits).sort();
  const batchRows = Float64Array.from(events, (e) => e.rows).sort();
  const closeReasons: Record<CloseReason, number> = { full: 0, timeout: 0, deadline: 0, idle: 0 };
  const batchSizes: Record<string, number> = {};
  for (const e of events) {
    closeReasons[e.reason]++;
    const b = bucket(e.rows);
    batchSizes[b] = (batchSizes[b] ?? 0) + 1;
  }
  const countedMs = Math.max(1, clock.now() - spec.warmupMs);
  const p99 = stoppedEarly ? Infinity : percentile(sorted, 99);
  return {
    offeredPerSec: spec.arrivals.ratePerSec,
    requests: latencies.length,
    rowsPerSec: (1000 * rows) / countedMs,
    requestsPerSec: (1000 * latencies.length) / countedMs,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99,
    waitMs: { mean: sortedWaits.reduce((s, x) => s + x, 0) / Math.max(1, sortedWaits.length), p99: percentile(sortedWaits, 99) },
    withinSlo: !stoppedEarly && latencies.length > 0 && p99 <= spec.sloMs,
    deadlineMisses: misses,
    batches: events.length,
    batchRows: {
      mean: batchRows.reduce((s, x) => s + x, 0) / Math.max(1, batchRows.length),
      p50: percentile(batchRows, 50),
      p95: percentile(batchRows, 95),
      max: batchRows[batchRows.length - 1] ?? 0,
    },
    batchSizes,
    closeReasons,
    stoppedEarly,
    batchLog: spec.keepBatches ? log : undefined,
  };
}
