/**
 * Delivery of final prediction records to whoever waits in this process, over Redis
 * pub/sub (graphql-redis-subscriptions' RedisPubSub, which speaks only ioredis, not GraphQL):
 *
 * - a synchronous job's reply comes on ONE reply channel per process, shared by all of them
 *   (a map of pending job ids, not a listener per request; the edge batcher holds each
 *   request's deadline). Nothing is stored for these jobs: a reply that reached no subscriber
 *   (this process's subscriber reconnecting, or resubscribing after its channel's slot moved)
 *   is published again by its worker for a few seconds, then its requests meet their deadline;
 * - a `predictionResult` subscription watches its id's channel: SUBSCRIBE is confirmed
 *   first, then the stored record is read, so a result finished before the subscription
 *   began is still delivered, and exactly once.
 *
 * On a Redis Cluster both kinds of channel are sharded (SSUBSCRIBE, through ShardedPubSub in
 * core/redis/cluster.ts, which has RedisPubSub's shape); the control channel stays on
 * RedisPubSub. Open watches re-read the store whenever the subscriptions were re-established
 * (a reconnect, a failover, a slot that moved), and, on a cluster, every few seconds, so that a
 * message lost in between, or a job lost with its master (core/prediction/lost-work.ts), ends
 * the watch instead of leaving it waiting.
 */
import { randomUUID } from 'node:crypto';
import { ServingError, asServingError, isRedisUnavailable } from '../errors/registry.ts';
import { isCluster, whileUnreachable, type Keyspace, type RedisClient } from '../redis/connection.ts';
import type { ChannelSubscriber } from '../redis/cluster.ts';
import type { ResultStore } from './result-store.ts';
import type { LostWork } from './lost-work.ts';
import { isFinal, type PredictionRecord, type SyncReply } from './record.ts';

/**
 * Longest a subscription's set-up (SUBSCRIBE confirmed, then the record read) may take. Past
 * it the client gets 503 SERVICE_UNAVAILABLE and subscribes again: during a Redis outage the
 * SUBSCRIBE would otherwise wait in ioredis's offline queue for the whole outage.
 */
const SETUP_TIMEOUT_MS = 2_000;

function unavailable(): ServingError {
  return new ServingError('SERVICE_UNAVAILABLE', 'result delivery (Redis) is unreachable; subscribe again shortly', {
    retryAfterSeconds: 1,
  });
}

/**
 * How long a worker keeps publishing a synchronous reply that reached no subscriber: longer than
 * an API's subscriber takes to reconnect or to subscribe again after a slot migration.
 */
export const REPLY_UNHEARD_MS = 5_000;

/**
 * A worker's end of the reply channels: publishes a synchronous job's reply to the API process
 * whose ResultFeed waits for it (`expect`, below). Nothing is stored: a reply nobody heard (the
 * API's subscriber reconnecting, or its sharded channel's slot just moved to another master and
 * not yet subscribed there) is published again by the worker for a few seconds
 * (core/worker/processor.ts); past that its requests meet their deadline. Reply channels are
 * sharded on a cluster, as the feed subscribes to them.
 */
export class ReplyPublisher {
  private readonly redis: RedisClient;
  private readonly sharded: boolean;

  constructor(redis: RedisClient) {
    this.redis = redis;
    this.sharded = isCluster(redis);
  }

  /** Publishes the reply once; resolves with how many subscribers heard it (0: the API's subscriber is away, or the API is gone). */
  async publish(channel: string, reply: SyncReply): Promise<number> {
    const message = JSON.stringify(reply);
    return Number(await (this.sharded ? this.redis.spublish(channel, message) : this.redis.publish(channel, message)));
  }

  /**
   * Publishes the reply, again while Redis is unreachable, until `giveUp` (the job's deadline, a
   * stopping worker). Resolves once it is published. If nobody heard it (the API's subscriber is
   * reconnecting, or on a cluster the reply channel's slot just moved and ioredis has not
   * subscribed on its new master yet; or the API is gone), it is published again apart from the
   * caller, for at most `REPLY_UNHEARD_MS`, until a try reaches a subscriber: so no listener
   * hears it twice. `onUnheard` is called if none ever did.
   */
  async send(channel: string, reply: SyncReply, o: { giveUp: () => boolean; onUnheard?: () => void }): Promise<void> {
    const publish = (): Promise<number> => whileUnreachable(() => this.publish(channel, reply), { giveUp: o.giveUp, maxDelayMs: 1000 });
    if ((await publish()) > 0) return;
    const until = Date.now() + REPLY_UNHEARD_MS;
    void (async () => {
      for (let attempt = 0; !o.giveUp() && Date.now() < until; attempt++) {
        await new Promise((r) => setTimeout(r, Math.min(400, 25 * 2 ** attempt)));
        if ((await publish()) > 0) return;
      }
      o.onUnheard?.();
    })().catch(() => o.onUnheard?.());
  }
}

interface Waiter {
  resolve: (r: SyncReply) => void;
  reject: (e: Error) => void;
}

export class ResultFeed {
  /** Channel on which workers answer this process's synchronous requests. */
  readonly replyChannel: string;
  private readonly pubsub: ChannelSubscriber;
  private readonly store: ResultStore;
  private readonly keys: Keyspace;
  private readonly waiters = new Map<string, Waiter>();
  private readonly subscriber: RedisClient;
  private lostWork?: LostWork;
  private sweep?: NodeJS.Timeout;
  /** Re-reads of the store after a reconnect, for watches that may have missed a message. */
  private readonly recheckers = new Set<() => void>();
  /** Ends every open watch with an error (shutdown). */
  private readonly enders = new Set<(e: ServingError) => void>();
  private replySubId?: number;
  /** Set once close() begins: watches begun from then on end with it at once. */
  private closing?: ServingError;

  constructor(pubsub: ChannelSubscriber, store: ResultStore, keys: Keyspace, instanceId: string = randomUUID()) {
    this.pubsub = pubsub;
    this.store = store;
    this.keys = keys;
    this.replyChannel = keys.replyChannel(instanceId);
    const subscriber = pubsub.getSubscriber() as RedisClient;
    this.subscriber = subscriber;
    // RedisPubSub.unsubscribe() drops the promises of its UNSUBSCRIBE and PUNSUBSCRIBE: one still
    // pending when the connection closes (shutdown, Redis gone) rejected unhandled. Handled here.
    // And batchline subscribes to no pattern, so its PUNSUBSCRIBE (one per watch) is not sent.
    const send = subscriber.unsubscribe.bind(subscriber) as (...args: unknown[]) => Promise<unknown>;
    (subscriber as unknown as Record<string, unknown>).unsubscribe = (...args: unknown[]) => {
      const sent = send(...args);
      sent.catch(() => {});
      return sent;
    };
    (subscriber as unknown as Record<string, unknown>).punsubscribe = () => Promise.resolve(0);
    let connectedOnce = false;
    subscriber.on('ready', () => {
      // Messages published while the subscriber was away are lost (pub/sub is at-most-once);
      // the store is not, so every open watch and waiter re-reads it.
      if (connectedOnce) this.recheckAll();
      connectedOnce = true;
    });
    // A cluster's sharded subscriptions come back on their own after a failover or a slot
    // migration, without a 'ready': ioredis says so with this event (core/redis/cluster.ts).
    subscriber.on('subscribersReady', () => this.recheckAll());
  }

  private recheckAll(): void {
    for (const recheck of this.recheckers) recheck();
  }

  /**
   * Ends watches whose work Redis lost (core/prediction/lost-work.ts) when they re-read the
   * store; with `everyMs`, every open watch re-reads it that often too (a cluster: its
   * subscriptions move with failovers and slot migrations).
   */
  checkLostWork(lostWork: LostWork, everyMs = 0): void {
    this.lostWork = lostWork;
    clearInterval(this.sweep);
    if (everyMs > 0) {
      this.sweep = setInterval(() => this.recheckAll(), everyMs);
      this.sweep.unref();
    }
  }

  /** The record, or what it becomes when its work was lost. */
  private async settled(rec: PredictionRecord | undefined): Promise<PredictionRecord | undefined> {
    if (!rec || isFinal(rec.status) || !this.lostWork?.due(rec)) return rec;
    return (await this.lostWork.settle(rec)) ?? rec;
  }

  /** Subscribes to this process's reply channel. Call once before `expect`. */
  async start(): Promise<void> {
    this.replySubId = await this.pubsub.subscribe<SyncReply>(this.replyChannel, (reply) => this.settle(reply));
  }

  private settle(reply: SyncReply): void {
    const w = this.waiters.get(reply.id);
    if (!w) return;
    this.waiters.delete(reply.id);
    w.resolve(reply);
  }

  /**
   * Reads a record, trying again while Redis is still coming back (the subscriber often
   * reconnects before the connection that reads): a re-read after a reconnect that failed
   * once would leave its watch waiting for a message that was published while it was away.
   * Gives up when `stop()` says so, or on any other error.
   */
  private readRetrying(id: string, stop: () => boolean): Promise<PredictionRecord | undefined> {
    return whileUnreachable(() => this.store.get(id), { giveUp: stop, maxDelayMs: 200 });
  }

  /**
   * Registers interest in synchronous job `id` BEFORE it is enqueued (the reply may come
   * before the enqueue returns). `cancel` stops waiting: the promise rejects with `reason`.
   */
  expect(id: string): { promise: Promise<SyncReply>; cancel: (reason?: Error) => void } {
    let cancel: (reason?: Error) => void = () => {};
    const promise = new Promise<SyncReply>((resolve, reject) => {
      this.waiters.set(id, { resolve, reject });
      cancel = (reason) => {
        if (this.waiters.get(id)?.resolve !== resolve) return;
        this.waiters.delete(id);
        reject(reason ?? new ServingError('DEADLINE_EXCEEDED'));
      };
    });
    // Handled from birth: a cancel can come before anyone awaits (a 1 ms deadline while the
    // enqueue is still in flight once ended the process with an unhandled rejection).
    promise.catch(() => {});
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
    // A record that was there and is gone (expired, or lost with a Redis node that held it and
    // no replica had it yet) can never become final: the watch ends saying so instead of waiting.
    const recheck = (): void =>
      void this.readRetrying(id, () => done)
        .then((rec) => this.settled(rec))
        .then(
          (rec) =>
            rec
              ? offer(rec)
              : end(
                  new ServingError('PREDICTION_NOT_FOUND', `the record of prediction '${id}' is gone (expired, or lost with a Redis node)`),
                ),
          () => {},
        );
    // Set-up is bounded: with Redis away, the client hears 503 now rather than after the outage.
    if (this.subscriber.status !== 'ready') throw unavailable();
    const setupEnds = Date.now() + SETUP_TIMEOUT_MS;
    const subscribing = this.pubsub.subscribe<PredictionRecord>(this.keys.resultChannel(id), offer);
    let timer: NodeJS.Timeout | undefined;
    const subId = await Promise.race([
      subscribing,
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), SETUP_TIMEOUT_MS))),
    ]).finally(() => clearTimeout(timer));
    if (subId === undefined) {
      // The SUBSCRIBE may still go through once Redis is back: undo it then.
      subscribing.then(
        (late) => this.pubsub.unsubscribe(late),
        () => {},
      );
      throw unavailable();
    }
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
      first = await this.readRetrying(id, () => done || Date.now() > setupEnds);
    } catch (e) {
      finish();
      throw isRedisUnavailable(e) ? unavailable() : asServingError(e);
    }
    if (!first) {
      finish();
      throw new ServingError('PREDICTION_NOT_FOUND', `no prediction with id '${id}' (unknown or expired)`);
    }
    offer(first);
    if (!done) this.recheckers.add(recheck);
    // Watching work accepted long ago that is still queued: see now whether its job is there.
    if (!done && this.lostWork?.due(first)) recheck();

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
    const bye = new ServingError(
      'SERVICE_UNAVAILABLE',
      'this server is shutting down; subscribe again (any replica can deliver the result)',
      { retryAfterSeconds: 1 },
    );
    this.closing = bye;
    clearInterval(this.sweep);
    for (const end of [...this.enders]) end(bye);
    const deadline = Date.now() + drainMs;
    while (this.waiters.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (this.replySubId !== undefined) this.pubsub.unsubscribe(this.replySubId);
    const unanswered = this.waiters.size;
    for (const [id, w] of this.waiters) {
      w.reject(new ServingError('SERVICE_UNAVAILABLE', 'server shutting down'));
      this.waiters.delete(id);
    }
    return unanswered;
  }
}
