/** Time as the batcher sees it; tests drive a manual clock instead of sleeping. */
export interface Clock {
  now(): number;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimer: (fn, ms) => setTimeout(fn, Math.max(0, ms)),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** A clock that moves only when told to; timers fire in due order. */
export class ManualClock implements Clock {
  private t = 0;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private nextId = 1;

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.t + Math.max(0, ms), fn, id });
    return id;
  }

  clearTimer(handle: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== handle);
  }

  /** When the earliest pending timer falls due; undefined when none is pending. */
  nextAt(): number | undefined {
    let at: number | undefined;
    for (const x of this.timers) if (at === undefined || x.at < at) at = x.at;
    return at;
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way. */
  advance(ms: number): void {
    this.advanceTo(this.t + ms);
  }

  /**
   * Moves time to `end` (never back), firing every timer due by then. A simulation steps
   * from one {@link nextAt} to the next with it: `advance(at - now)` can round short of `at`.
   */
  advanceTo(end: number): void {
    end = Math.max(end, this.t);
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
}
