/**
 * The API's edge batcher: every synchronous `predict` goes through it. Concurrent requests of
 * one model, version and row shape gather into one job, so the queue, Redis and worker costs
 * (an admission and an add script, a fetch and lock, a finish, a publish) are paid once per
 * batch instead of once per request. The worker answers each request its own rows and
 * predictions (the job names its segments); nothing is recomputed here.
 *
 * A gathering batch is sent:
 *   - `full`: it holds the model's edge row limit (1 for a model that cannot batch: every
 *     request is its own job, at once);
 *   - `idle`: fewer than `maxInFlight` batches of its group are out, so nothing is gained by
 *     waiting (at low load a request goes alone, with no delay; under load, batches form
 *     while earlier ones run, and their size follows the load);
 *   - `timeout`: its oldest request has waited the model's edge delay.
 * Each request keeps its own deadline (one timer): past it, that request alone is answered
 * DEADLINE_EXCEEDED and leaves its batch; the others are still answered. A batch whose
 * requests have all left is abandoned (its job taken back if no worker has it yet).
 */
import type { NormalizedInput } from '../prediction/input.ts';
import type { ReplyPart, SyncReply } from '../prediction/record.ts';
import { mergeInputs, shapeSignature } from './merge.ts';
import { systemClock, type Clock } from './clock.ts';
import { ServingError, fromSerialized } from '../errors/registry.ts';

export type EdgeSendReason = 'full' | 'idle' | 'timeout';

/** What one job of a batch carries, for `dispatch`. */
export interface EdgeBatch {
  /** The group's key (model key and row shape). */
  group: string;
  /** The model version's key, as given to `submit`. */
  modelKey: string;
  input: NormalizedInput;
  rows: number;
  /** Rows of each request, in order. */
  segments: number[];
  /** Request ids, in the same order. */
  requestIds: string[];
  /** Each request's trace context as given to `submit` (undefined when untraced), in the same order. */
  traces: unknown[];
  /** How long the batch gathered before it was sent, ms. */
  gatheredMs: number;
  /** Epoch ms of the latest deadline among the requests. */
  deadline: number;
  reason: EdgeSendReason;
}

/** A job on its way: its reply, and a way to give it up. */
export interface EdgeJob {
  reply: Promise<SyncReply>;
  /** Nobody waits any more: stop waiting for the reply and take the job back if it has not started. */
  abandon(): void;
}

export interface EdgeLimits {
  /** Most rows in one batch (1: no batching). */
  maxRows: number;
  /** Longest a request waits for company. */
  maxDelayMs: number;
}

/** What a request gets: its part of the reply, and the batch's figures. */
export interface EdgeAnswer {
  part: ReplyPart;
  queueMs: number;
  inferenceMs: number;
  batchRows: number;
  /** How long this request waited here for its batch to be sent, plus the job's wait for the worker's batch. */
  batchWaitMs: number;
  coldStartMs: number;
}

export interface EdgeBatcherOptions {
  /** Sends one batch as one job. */
  dispatch: (batch: EdgeBatch) => EdgeJob;
  /** Batches of one group out at once before new requests wait for one to come back. @defaultValue 2 */
  maxInFlight?: number;
  clock?: Clock;
  /** Wall-clock epoch ms, for deadlines that travel with the job. @defaultValue Date.now */
  epochNow?: () => number;
  onSend?: (batch: EdgeBatch) => void;
}

interface Member {
  input: NormalizedInput;
  rows: number;
  requestId: string;
  trace: unknown;
  arrivedAt: number;
  /** Set when its batch is sent: how long it waited here. */
  waitedMs: number;
  deadline: number;
  timer: unknown;
  done: boolean;
  resolve: (a: EdgeAnswer) => void;
  reject: (e: Error) => void;
  /** Where it waits: the gathering batch, then the sent one. */
  batch: Gathering;
}

interface Gathering {
  group: string;
  modelKey: string;
  openedAt: number;
  limits: EdgeLimits;
  members: Member[];
  rows: number;
  timer?: unknown;
  /** Set once sent. */
  job?: EdgeJob;
}

export class EdgeBatcher {
  private readonly options: EdgeBatcherOptions;
  private readonly clock: Clock;
  private readonly epochNow: () => number;
  private readonly maxInFlight: number;
  private readonly open = new Map<string, Gathering>();
  private readonly inFlight = new Map<string, number>();

  constructor(options: EdgeBatcherOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.epochNow = options.epochNow ?? Date.now;
    this.maxInFlight = Math.max(1, options.maxInFlight ?? 2);
  }

  /** Batches of `group` sent and not yet answered or abandoned. */
  outstanding(group: string): number {
    return this.inFlight.get(group) ?? 0;
  }

  /**
   * One request of `rows` rows for `modelKey`, answered within `timeoutMs` or refused with
   * DEADLINE_EXCEEDED. `trace` (its trace context, opaque here) travels with it into its batch.
   */
  submit(
    modelKey: string,
    limits: EdgeLimits,
    input: NormalizedInput,
    rows: number,
    timeoutMs: number,
    requestId: string,
    trace?: unknown,
  ): Promise<EdgeAnswer> {
    const group = `${modelKey}#${shapeSignature(input)}`;
    return new Promise<EdgeAnswer>((resolve, reject) => {
      let batch = this.open.get(group);
      // It does not fit: what is there goes as a full batch, this one starts the next.
      if (batch && batch.rows + rows > limits.maxRows) {
        this.send(batch, 'full');
        batch = undefined;
      }
      if (!batch) {
        batch = { group, modelKey, openedAt: this.clock.now(), limits, members: [], rows: 0 };
        this.open.set(group, batch);
      }
      const member: Member = {
        input,
        rows,
        requestId,
        trace,
        arrivedAt: this.clock.now(),
        waitedMs: 0,
        deadline: this.epochNow() + timeoutMs,
        timer: undefined,
        done: false,
        resolve,
        reject,
        batch,
      };
      member.timer = this.clock.setTimer(() => this.expire(member, timeoutMs), timeoutMs);
      batch.members.push(member);
      batch.rows += rows;
      if (batch.rows >= limits.maxRows) this.send(batch, 'full');
      else if (this.outstanding(group) < this.maxInFlight) this.send(batch, 'idle');
      else batch.timer ??= this.clock.setTimer(() => this.send(batch, 'timeout'), limits.maxDelayMs);
    });
  }

  private send(batch: Gathering, reason: EdgeSendReason): void {
    if (batch.job) return;
    if (batch.timer !== undefined) this.clock.clearTimer(batch.timer);
    if (this.open.get(batch.group) === batch) this.open.delete(batch.group);
    const members = batch.members.filter((m) => !m.done);
    if (members.length === 0) return;
    batch.members = members;
    const now = this.clock.now();
    for (const m of members) m.waitedMs = now - m.arrivedAt;
    const job: EdgeBatch = {
      group: batch.group,
      modelKey: batch.modelKey,
      input: mergeInputs(members.map((m) => m.input)),
      rows: members.reduce((s, m) => s + m.rows, 0),
      segments: members.map((m) => m.rows),
      requestIds: members.map((m) => m.requestId),
      traces: members.map((m) => m.trace),
      gatheredMs: now - batch.openedAt,
      deadline: Math.max(...members.map((m) => m.deadline)),
      reason,
    };
    this.inFlight.set(batch.group, this.outstanding(batch.group) + 1);
    this.options.onSend?.(job);
    let sent: EdgeJob;
    try {
      sent = this.options.dispatch(job);
    } catch (e) {
      sent = { reply: Promise.reject(e), abandon: () => {} };
    }
    batch.job = sent;
    sent.reply
      .then(
        (reply) => this.answer(members, reply, batch.modelKey),
        (e: Error) => {
          for (const m of members) this.settle(m, () => m.reject(e));
        },
      )
      .finally(() => {
        this.inFlight.set(batch.group, this.outstanding(batch.group) - 1);
        // A batch came back: what gathered meanwhile goes now.
        const next = this.open.get(batch.group);
        if (next && this.outstanding(batch.group) < this.maxInFlight) this.send(next, 'idle');
      });
  }

  private answer(members: Member[], reply: SyncReply, modelKey: string): void {
    // A reply that is not one (it did not decode, or lacks its status) is an answer the API cannot use.
    if (typeof reply !== 'object' || reply === null || (reply.status !== 'COMPLETED' && reply.status !== 'FAILED')) {
      const err = new ServingError('BAD_GATEWAY', `the worker's reply for ${modelKey} could not be read`);
      for (const m of members) this.settle(m, () => m.reject(err));
      return;
    }
    const common = {
      queueMs: reply.queueMs,
      inferenceMs: reply.inferenceMs,
      batchRows: reply.batchRows,
      coldStartMs: reply.coldStartMs ?? 0,
    };
    members.forEach((m, i) => {
      const part = reply.parts?.[i];
      if (reply.status !== 'COMPLETED' || !part) {
        const err = reply.error
          ? fromSerialized(reply.error)
          : new ServingError('BAD_GATEWAY', `the worker's reply for ${modelKey} has no part for this request`);
        this.settle(m, () => m.reject(err));
      } else if (part.error) {
        const err = fromSerialized(part.error);
        this.settle(m, () => m.reject(err));
      } else {
        this.settle(m, () => m.resolve({ part, ...common, batchWaitMs: m.waitedMs + (reply.batchWaitMs ?? 0) }));
      }
    });
  }

  private settle(m: Member, how: () => void): void {
    if (m.done) return;
    m.done = true;
    this.clock.clearTimer(m.timer);
    how();
  }

  /** A request's deadline passed: it alone is refused; a batch nobody waits for any more is given up. */
  private expire(m: Member, timeoutMs: number): void {
    if (m.done) return;
    this.settle(m, () => m.reject(new ServingError('DEADLINE_EXCEEDED', `no result within ${timeoutMs} ms`)));
    const batch = m.batch;
    if (!batch.job) {
      batch.rows -= m.rows;
      batch.members = batch.members.filter((x) => x !== m);
      if (batch.members.length === 0) {
        if (batch.timer !== undefined) this.clock.clearTimer(batch.timer);
        if (this.open.get(batch.group) === batch) this.open.delete(batch.group);
      }
      return;
    }
    if (batch.members.every((x) => x.done)) batch.job.abandon();
  }
}
