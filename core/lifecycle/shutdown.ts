/**
 * Shutdown that ends in bounded time whatever Redis does. Closing a BullMQ worker or an
 * ioredis client waits for a Redis that may never answer (ioredis reconnects forever and
 * queues QUIT until it is back; BullMQ records a finished job's outcome before it closes),
 * so each step is raced against the time left and given up on, not awaited, when it runs out.
 *
 * The bounds: a worker waits `workers.shutdownTimeoutMs` for the jobs in hand, an API
 * `http.drainMs` for the requests in flight; either then has RELEASE_MS to let go of its
 * connections and threads. A hard timer HARD_EXIT_SLACK_MS later ends the process whatever
 * the graceful path is doing (it never should be).
 */
import type { BatchlineConfig } from '../config/settings.ts';

/** Time past the configured wait for releasing connections, threads and buffers. */
export const RELEASE_MS = 2000;
/** The hard exit timer's slack past the graceful bound. */
export const HARD_EXIT_SLACK_MS = 2000;

/** The graceful bound of a process's shutdown: its configured wait plus RELEASE_MS. */
export function shutdownBoundMs(config: BatchlineConfig, role: 'api' | 'worker'): number {
  return (role === 'api' ? config.http.drainMs : config.workers.shutdownTimeoutMs) + RELEASE_MS;
}

export class Deadline {
  private readonly endsAt: number;
  /** What was left unfinished when its time ran out, for the last log line. */
  readonly dropped: string[] = [];

  constructor(ms: number) {
    this.endsAt = Date.now() + ms;
  }

  get leftMs(): number {
    return Math.max(0, this.endsAt - Date.now());
  }

  /**
   * Waits for `work` until it settles, `capMs` passes, the deadline passes or `pointless()`
   * holds (polled: for waits Redis alone could end, once Redis is gone). True when it
   * settled; a rejection counts as settled (the step's own errors are its business).
   */
  async within(work: Promise<unknown> | undefined, capMs = Infinity, pointless?: () => boolean): Promise<boolean> {
    if (!work) return true;
    const timers: NodeJS.Timeout[] = [];
    const gaveUp = new Promise<false>((resolve) => {
      timers.push(setTimeout(() => resolve(false), Math.min(this.leftMs, capMs)));
      if (pointless) timers.push(setInterval(() => pointless() && resolve(false), 50));
    });
    try {
      return await Promise.race([
        work.then(
          () => true,
          () => true,
        ),
        gaveUp,
      ]);
    } finally {
      for (const t of timers) clearTimeout(t);
    }
  }

  /** Like `within`, and names the step in `dropped` when it was given up on. */
  async step(what: string, work: Promise<unknown> | undefined, capMs = Infinity, pointless?: () => boolean): Promise<boolean> {
    const done = await this.within(work, capMs, pointless);
    if (!done) this.dropped.push(what);
    return done;
  }
}
