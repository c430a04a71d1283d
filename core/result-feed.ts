/**
 * Delivery of final prediction records to whoever waits in this process, over Redis
 * pub/sub (graphql-redis-subscriptions' RedisPubSub, which speaks only ioredis, not GraphQL):
 *
 * - a synchronous `predict` waits on ONE reply channel per process, shared by all requests
 *   (a map of pending ids with their own timeouts, not a listener per request);
 * - a `predictionResult` subscription watches its id's channel: SUBSCRIBE is confirmed
 *   first, then the stored record is read, so a result finished before the subscription
 *   began is still delivered, and exactly once.
 */
import { randomUUID } from 'node:crypto';
import type { RedisPubSub } from 'graphql-redis-subscriptions';
import type { Redis } from 'ioredis';
import { ServingError } from './errors.ts';
import type { Keyspace } from './redis.ts';
import type { ResultStore } from './result-store.ts';
import { isFinal, type PredictionRecord } from './prediction.ts';

interface Waiter {
  resolve: (r: PredictionRecord) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class ResultFeed {
  /** Channel on which workers answer this process's synchronous requests. */
  readonly replyChannel: string;
  private readonly pubsub: RedisPubSub;
  private readonly store: ResultStore;
  private readonly keys: Keyspace;
  private readonly waiters = new Map<string, Waiter>();
  /** Re-reads of the store after a reconnect, for watches that may have missed a message. */
  private readonly recheckers = new Set<() => void>();
  /** Ends every open watch with an error (shutdown). */
  private readonly enders = new Set<(e: ServingError) => void>();
  private replySubId?: number;
  /** Set once close() begins: watches begun from then on end with it at once. */
  private closing?: ServingError;

  constructor(pubsub: RedisPubSub, store: ResultStore, keys: Keyspace, instanceId: string = randomUUID()) {
    this.pubsub = pubsub;
    this.store = store;
    this.keys = keys;
    this.replyChannel = keys.replyChannel(instanceId);
    const subscriber = pubsub.getSubscriber() as Redis;
    let connectedOnce = false;
    subscriber.on('ready', () => {
      // Messages published while the subscriber was away are lost (pub/sub is at-most-once);
      // the store is not, so every open watch and waiter re-reads it.
      if (connectedOnce) {
        for (const recheck of this.recheckers) recheck();
        for (const id of this.waiters.keys()) void this.recheckWaiter(id);
      }
      connectedOnce = true;
    });
  }

  /** Subscribes to this process's reply channel. Call once before `waitFor`. */
  async start(): Promise<void> {
    this.replySubId = await this.pubsub.subscribe<PredictionRecord>(this.replyChannel, (record) => this.settle(record));
  }

  private settle(record: PredictionRecord): void {
    const w = this.waiters.get(record.id);
    if (!w || !isFinal(record.status)) return;
    this.waiters.delete(record.id);
    clearTimeout(w.timer);
    w.resolve(record);
  }

  private async recheckWaiter(id: string): Promise<void> {
    const rec = await this.store.get(id).catch(() => undefined);
    if (rec) this.settle(rec);
  }

  /**
   * Registers interest in `id` BEFORE its job is enqueued; resolves with the final record,
   * rejects with DEADLINE_EXCEEDED after `timeoutMs`.
   */
  waitFor(id: string, timeoutMs: number): { promise: Promise<PredictionRecord>; cancel: () => void } {
    let cancel = (): void => {};
    const promise = new Promise<PredictionRecord>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new ServingError('DEADLINE_EXCEEDED', `no result within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.set(id, { resolve, reject, timer });
      cancel = () => {
        clearTimeout(timer);
        this.waiters.delete(id);
      };
    });
    return { promise, cancel };
  }

  /**
   * Watches one prediction: yields its final record once, then ends. Throws
   * PREDICTION_NOT_FOUND when no record exists for `id`.
   */
  async watch(id: string): Promise<AsyncIterableIterator<PredictionRecord>> {
    let delivered = false;
    let done = false;
    let failure: ServingError | undefined;
    let pending: PredictionRecord | undefined;
    let wake: (() => void) | undefined;
    const offer = (rec: PredictionRecord | undefined): void => {
      if (!rec || delivered || pending || !isFinal(rec.status)) return;
      pending = rec;
      wake?.();
    };
    const recheck = (): void => void this.store.get(id).then(offer, () => {});
    const subId = await this.pubsub.subscribe<PredictionRecord>(this.keys.resultChannel(id), offer);
    const end = (e: ServingError): void => {
      failure = e;
      finish();
    };
    const finish = (): void => {
      if (done) return;
      done = true;
      this.recheckers.delete(recheck);
      this.enders.delete(end);
      this.pubsub.unsubscribe(subId);
      wake?.();
    };
    // Registered before the first read: a shutdown that begins while it is in flight ends this
    // watch too (a final record read meanwhile is still delivered first).
    this.enders.add(end);
    if (this.closing) end(this.closing);
    let first: PredictionRecord | undefined;
    try {
      first = await this.store.get(id);
    } catch (e) {
      finish();
      throw e;
    }
    if (!first) {
      finish();
      throw new ServingError('PREDICTION_NOT_FOUND', `no prediction with id '${id}' (unknown or expired)`);
    }
    offer(first);
    if (!done) this.recheckers.add(recheck);

    const iterator: AsyncIterableIterator<PredictionRecord> = {
      [Symbol.asyncIterator]() {
        return iterator;
      },
      async next() {
        while (!pending && !done) await new Promise<void>((r) => (wake = r));
        if (failure && !pending) throw failure;
        if (pending && !delivered) {
          delivered = true;
          const value = pending;
          finish();
          return { value, done: false };
        }
        finish();
        return { value: undefined, done: true };
      },
      async return() {
        finish();
        return { value: undefined, done: true };
      },
    };
    return iterator;
  }

  /**
   * Shutdown: open watches end at once with SERVICE_UNAVAILABLE (their clients resubscribe,
   * on any replica); synchronous requests in flight get up to `drainMs` to be answered.
   * Resolves with how many were still unanswered then (they get SERVICE_UNAVAILABLE).
   */
  async close(drainMs = 0): Promise<number> {
    const bye = new ServingError('SERVICE_UNAVAILABLE', 'this server is shutting down; subscribe again (any replica can deliver the result)', { retryAfterSeconds: 1 });
    this.closing = bye;
    for (const end of [...this.enders]) end(bye);
    const deadline = Date.now() + drainMs;
    while (this.waiters.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (this.replySubId !== undefined) this.pubsub.unsubscribe(this.replySubId);
    const unanswered = this.waiters.size;
    for (const [id, w] of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new ServingError('SERVICE_UNAVAILABLE', 'server shutting down'));
      this.waiters.delete(id);
    }
    return unanswered;
  }
}
