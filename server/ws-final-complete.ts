/**
 * graphql-ws: a subscription's `complete` sent only once the client has read its last result.
 *
 * The released graphql-ws client (6.4.2) releases its connection's lock twice when a
 * subscription is disposed inside its own `next` handler and the server's `complete` for it is
 * dispatched in the same socket read (docs/graphql-ws-client-double-release.md). The count then
 * reaches zero with operations still pending, the client closes the socket with 1000 and
 * completes those operations without their results. A one-result subscription (predictionResult)
 * sends `next` and `complete` back to back, so a client that stops listening once it has its
 * answer meets this under load.
 *
 * So after a subscription's last `next` (or before an `error` that follows one) the server
 * holds it open until one of: the client completes it itself (then no `complete` is sent at all);
 * the client answers a protocol `ping` sent after that `next` (its `pong` proves it has read and
 * handled the `next`, so a `complete` sent now arrives in a later read); or `graceMs` passes
 * (a client that does not answer pings). One ping covers every subscription of a connection
 * that ended in the same turn of the event loop. SSE is not concerned: yoga ends those streams
 * itself, at once.
 */
import type { WebSocket } from 'ws';
import type { ExecutionResult } from 'graphql';

/** The `ping` payload key that marks our pings, so that other pongs are not mistaken for answers. */
const RECEIPT = 'batchlineReadReceipt';

interface Batch {
  releases: Set<() => void>;
  timer?: NodeJS.Timeout;
}

/**
 * Per connection: releases each waiter once the client has answered a ping sent after it
 * registered, or after `graceMs`. Pongs come back in the order of their pings, and a pong for
 * ping `n` answers every ping before it too.
 */
export class ReadReceipts {
  private seq = 0;
  /** Waiters registered this turn, not yet behind a ping. */
  private gathering?: Set<() => void>;
  private readonly sent = new Map<number, Batch>();
  private closed = false;
  private readonly socket: WebSocket;
  private readonly graceMs: number;

  constructor(socket: WebSocket, graceMs: number) {
    this.socket = socket;
    this.graceMs = graceMs;
  }

  /** Calls `release` once the client has read everything sent before now; returns a canceller. */
  afterRead(release: () => void): () => void {
    if (this.closed || this.socket.readyState !== this.socket.OPEN) {
      release();
      return () => {};
    }
    if (!this.gathering) {
      this.gathering = new Set();
      // A turn's worth of endings share one ping, sent after every `next` written this turn.
      setImmediate(() => this.flush());
    }
    // The set moves into its ping's batch as it is: deleting from it cancels before and after the ping.
    const batch = this.gathering;
    batch.add(release);
    return () => void batch.delete(release);
  }

  private flush(): void {
    const releases = this.gathering!;
    this.gathering = undefined;
    if (releases.size === 0) return;
    if (this.closed || this.socket.readyState !== this.socket.OPEN) return releaseAll(releases);
    const n = ++this.seq;
    const batch: Batch = { releases };
    batch.timer = setTimeout(() => this.answered(n, true), this.graceMs);
    batch.timer.unref();
    this.sent.set(n, batch);
    this.socket.send(JSON.stringify({ type: 'ping', payload: { [RECEIPT]: n } }));
  }

  /** A `pong` from the client: answers our ping it names and every one before it. */
  pong(payload: unknown): void {
    const n = (payload as Record<string, unknown> | undefined)?.[RECEIPT];
    if (typeof n === 'number') this.answered(n, false);
  }

  private answered(n: number, timedOut: boolean): void {
    for (const [k, batch] of this.sent) {
      if (timedOut ? k !== n : k > n) continue;
      clearTimeout(batch.timer);
      this.sent.delete(k);
      releaseAll(batch.releases);
    }
  }

  /** The connection closed: nothing more will be sent on it, so nothing needs holding. */
  close(): void {
    this.closed = true;
    for (const [k, batch] of this.sent) {
      clearTimeout(batch.timer);
      this.sent.delete(k);
      releaseAll(batch.releases);
    }
  }
}

function releaseAll(releases: Set<() => void>): void {
  for (const release of releases) release();
  releases.clear();
}

type Operation = AsyncIterable<ExecutionResult> | ExecutionResult;

const isStream = (o: Operation): o is AsyncIterable<ExecutionResult> =>
  typeof (o as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] === 'function';

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/**
 * A subscription's results as graphql-ws's server iterates them, its end (`done`, or an error
 * after a result) held back until `receipts` says the client has read the last result, or until
 * the client completes it (`return()`). A subscription that produced no result (its `subscribe`
 * failed: one `next` with errors) is made a one-result stream so that it is held the same way.
 * A class, not closures: every open subscription has one, so its methods live on the prototype.
 */
class HeldStream implements AsyncGenerator<ExecutionResult> {
  private readonly source: AsyncIterator<ExecutionResult> | Iterator<ExecutionResult>;
  private readonly receipts: ReadReceipts;
  private delivered = false;
  private returned = false;
  /** The source ended (done or threw): it needs no `return()`. */
  private finished = false;
  /** Ends the hold at once (the client completed the subscription); set while held. */
  private unhold?: () => void;

  constructor(operation: Operation, receipts: ReadReceipts) {
    this.source = isStream(operation) ? operation[Symbol.asyncIterator]() : [operation][Symbol.iterator]();
    this.receipts = receipts;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Resolves once the client has read what was sent, or has completed the subscription itself. */
  private hold(): Promise<void> {
    return new Promise<void>((resolve) => {
      const cancel = this.receipts.afterRead(resolve);
      this.unhold = () => {
        cancel();
        resolve();
      };
    });
  }

  async next(): Promise<IteratorResult<ExecutionResult>> {
    if (this.returned) return DONE;
    let step: IteratorResult<ExecutionResult>;
    try {
      step = await this.source.next();
    } catch (e) {
      this.finished = true;
      if (this.delivered && !this.returned) await this.hold();
      if (this.returned) return DONE;
      throw e;
    }
    if (!step.done) {
      this.delivered = true;
      return step;
    }
    this.finished = true;
    if (this.delivered && !this.returned) await this.hold();
    return DONE;
  }

  async return(): Promise<IteratorResult<ExecutionResult>> {
    this.returned = true;
    this.unhold?.();
    if (!this.finished) await this.source.return?.();
    return DONE;
  }

  async throw(e: unknown): Promise<IteratorResult<ExecutionResult>> {
    this.returned = true;
    this.unhold?.();
    if (!this.finished) await this.source.return?.();
    throw e;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.return();
  }
}

/** `operation`'s results with their end held until the client has read the last one (HeldStream). */
export function holdFinalComplete(operation: Operation, receipts: ReadReceipts): AsyncGenerator<ExecutionResult> {
  return new HeldStream(operation, receipts);
}
