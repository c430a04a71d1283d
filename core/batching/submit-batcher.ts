/**
 * The API's gatherer of asynchronous submissions: concurrent `submitPrediction`s of one model,
 * version, row shape and priority become one job (core/api/tickets.ts), as concurrent
 * synchronous predicts do at the edge batcher (edge-batcher.ts). A submission is answered
 * with its ticket once its part of the job is admitted and enqueued; its answer comes later,
 * through its own record (the worker answers each part its own rows).
 *
 * A gathering group is sent, as the edge batcher sends:
 *   - `full`: it holds the group's row limit (1 for a model that cannot batch: each alone);
 *   - `idle`: fewer than `maxInFlight` sends of its group are on their way to Redis, so
 *     nothing is gained by waiting (a quiet server sends every submission at once);
 *   - `timeout`: its oldest submission has waited the group's delay.
 * Under load, submissions gather while earlier sends are on their way, and the job's size
 * follows the load.
 */
import { systemClock, type Clock } from './clock.ts';
import type { EdgeLimits, EdgeSendReason } from './edge-batcher.ts';

/** What `dispatch` answers for each gathered item, in order: its result, or its own error. */
export type GatheredOutcome<R> = { ok: true; value: R } | { ok: false; error: Error };

export interface SubmitBatcherOptions<M, R> {
  /** Sends one group's gathered items as one job. A rejection fails every item. */
  dispatch: (group: string, items: M[], reason: EdgeSendReason) => Promise<GatheredOutcome<R>[]>;
  /** Sends of one group on their way at once before new items wait for one to come back. @defaultValue 1 */
  maxInFlight?: number;
  clock?: Clock;
}

interface Waiting<M, R> {
  item: M;
  resolve: (r: R) => void;
  reject: (e: Error) => void;
}

interface Gathering<M, R> {
  group: string;
  limits: EdgeLimits;
  rows: number;
  members: Waiting<M, R>[];
  timer?: unknown;
  sent: boolean;
}

export class SubmitBatcher<M, R> {
  private readonly options: SubmitBatcherOptions<M, R>;
  private readonly clock: Clock;
  private readonly maxInFlight: number;
  private readonly open = new Map<string, Gathering<M, R>>();
  private readonly inFlight = new Map<string, number>();

  constructor(options: SubmitBatcherOptions<M, R>) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.maxInFlight = Math.max(1, options.maxInFlight ?? 1);
  }

  /** Sends of `group` on their way. */
  outstanding(group: string): number {
    return this.inFlight.get(group) ?? 0;
  }

  /** One item of `rows` rows for `group`; resolves with its own outcome once its job is sent. */
  submit(group: string, limits: EdgeLimits, rows: number, item: M): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      let batch = this.open.get(group);
      if (batch && batch.rows + rows > limits.maxRows) {
        this.send(batch, 'full');
        batch = undefined;
      }
      if (!batch) {
        batch = { group, limits, rows: 0, members: [], sent: false };
        this.open.set(group, batch);
      }
      batch.members.push({ item, resolve, reject });
      batch.rows += rows;
      if (batch.rows >= limits.maxRows) this.send(batch, 'full');
      else if (this.outstanding(group) < this.maxInFlight) this.send(batch, 'idle');
      else {
        const b = batch;
        b.timer ??= this.clock.setTimer(() => this.send(b, 'timeout'), limits.maxDelayMs);
      }
    });
  }

  private send(batch: Gathering<M, R>, reason: EdgeSendReason): void {
    if (batch.sent) return;
    batch.sent = true;
    if (batch.timer !== undefined) this.clock.clearTimer(batch.timer);
    if (this.open.get(batch.group) === batch) this.open.delete(batch.group);
    const members = batch.members;
    this.inFlight.set(batch.group, this.outstanding(batch.group) + 1);
    let sent: Promise<GatheredOutcome<R>[]>;
    try {
      sent = this.options.dispatch(
        batch.group,
        members.map((m) => m.item),
        reason,
      );
    } catch (e) {
      sent = Promise.reject(e as Error);
    }
    sent
      .then(
        (outcomes) =>
          members.forEach((m, i) => {
            const o = outcomes[i];
            if (o?.ok) m.resolve(o.value);
            else m.reject(o ? o.error : new Error('no outcome for this submission'));
          }),
        (e: Error) => members.forEach((m) => m.reject(e)),
      )
      .finally(() => {
        this.inFlight.set(batch.group, this.outstanding(batch.group) - 1);
        // A send came back: what gathered meanwhile goes now.
        const next = this.open.get(batch.group);
        if (next && this.outstanding(batch.group) < this.maxInFlight) this.send(next, 'idle');
      });
  }
}
