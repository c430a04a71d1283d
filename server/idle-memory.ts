/**
 * Memory given back once the API is idle again after a burst.
 *
 * V8 grows its heap under load and shrinks it by itself once idle, but the pages it frees are
 * pooled, not unmapped: after three fuzz runs of 12,000 requests the heap was back to ~70 MB
 * live while the process kept ~490 MB resident (bench/fuzz-memory.ts), and a plain full GC
 * changes nothing there. A last-resort collection (V8's CollectAllAvailableGarbage: compacting,
 * and releasing its pooled pages) gives it back to the system.
 *
 * So every CHECK_MS this watches the event loop: when it was nearly idle over the last period
 * (utilisation under IDLE_UTILISATION) and the resident memory stands more than GROWTH over
 * what it was after the last release (or at start), it runs one such collection (some tens of
 * milliseconds on a heap of ~100 MB, only while nothing else runs) and logs one line. Held
 * subscriptions are memory in use: a release that frees little raises the floor, so it is not
 * tried again until memory grows further.
 */
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from '../core/telemetry/logger.ts';

export const CHECK_MS = 10_000;
export const IDLE_UTILISATION = 0.05;
/** Resident memory over the floor by this factor before a release is tried. */
export const GROWTH = 1.25;

type Gc = (options?: { type?: 'major' | 'minor'; execution?: 'sync' | 'async'; flavor?: 'regular' | 'last-resort' }) => void;

let gcFunction: Gc | undefined;
/** V8's `gc`: the global one under --expose-gc, else exposed once at run time (as jest's leak detector does). */
function gc(): Gc {
  if (gcFunction) return gcFunction;
  const global = (globalThis as { gc?: Gc }).gc;
  if (global) return (gcFunction = global);
  setFlagsFromString('--expose-gc');
  gcFunction = runInNewContext('gc') as Gc;
  return gcFunction;
}

/** One last-resort collection: the memory figures before and after, and its duration. */
export function releaseMemory(): { rssBefore: number; rssAfter: number; heapBefore: number; heapAfter: number; ms: number } {
  const before = process.memoryUsage();
  const t0 = performance.now();
  gc()({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  const ms = performance.now() - t0;
  const after = process.memoryUsage();
  return { rssBefore: before.rss, rssAfter: after.rss, heapBefore: before.heapTotal, heapAfter: after.heapTotal, ms };
}

export interface IdleMemory {
  /** Releases run so far. */
  readonly releases: number;
  stop(): void;
}

export function releaseMemoryWhenIdle(logger: Logger, o: { checkMs?: number } = {}): IdleMemory {
  let floor = process.memoryUsage().rss;
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  let releases = 0;
  const MB = 1024 * 1024;
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    const rss = process.memoryUsage().rss;
    if (rss < floor) floor = rss;
    if (busy >= IDLE_UTILISATION || rss <= floor * GROWTH) return;
    const r = releaseMemory();
    releases++;
    // What stays is in use (held subscriptions, caches at their bounds): the next try waits for more growth.
    floor = r.rssAfter;
    logger.info(
      {
        rssMb: Math.round(r.rssBefore / MB),
        rssAfterMb: Math.round(r.rssAfter / MB),
        heapMb: Math.round(r.heapBefore / MB),
        heapAfterMb: Math.round(r.heapAfter / MB),
        ms: Math.round(r.ms),
      },
      'idle: memory given back',
    );
  }, o.checkMs ?? CHECK_MS);
  timer.unref();
  return {
    get releases() {
      return releases;
    },
    stop: () => clearInterval(timer),
  };
}
