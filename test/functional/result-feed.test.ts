/**
 * The result feed at shutdown, on a real Redis: every watch open when the API begins to close
 * ends with SERVICE_UNAVAILABLE (its client resubscribes on another replica), including one
 * whose first read of the store is still in flight, and one begun after closing started. A
 * final record already read is delivered rather than thrown away.
 */
import { randomUUID } from 'node:crypto';
import { RedisPubSub } from 'graphql-redis-subscriptions';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Redis } from 'ioredis';
import { createRedis, keyspace, whenReady } from '../../core/redis/connection.ts';
import { ReplyPublisher, ResultFeed } from '../../core/prediction/result-feed.ts';
import { ResultStore } from '../../core/prediction/result-store.ts';
import type { PredictionRecord, SyncReply } from '../../core/prediction/record.ts';
import { dropPrefix, uniquePrefix } from '../../harness/stack.ts';
import { startPrivateRedis } from '../../harness/private-redis.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('feed');
const keys = keyspace(prefix);
const redis = createRedis(redisUrl, 'producer');
const pubsub = new RedisPubSub({ publisher: createRedis(redisUrl, 'producer'), subscriber: createRedis(redisUrl, 'subscriber') });
const store = new ResultStore(redis, keys, 60);

function queued(): PredictionRecord {
  return { id: randomUUID(), status: 'QUEUED', model: 'm', version: '1', pool: 'gpu', rows: 1, submittedAt: Date.now() };
}

/**
 * Watches `id` on a feed whose store holds the watch's first read until the feed has begun to
 * close: the moment a SIGTERM can land between SUBSCRIBE and the read.
 */
async function closeDuringFirstRead(id: string): Promise<{ it: AsyncIterator<PredictionRecord>; closed: Promise<number> }> {
  let began!: () => void;
  let release!: () => void;
  const reading = new Promise<void>((r) => (began = r));
  const gate = new Promise<void>((r) => (release = r));
  const gated = Object.assign(Object.create(store) as ResultStore, {
    get: async (key: string) => {
      began();
      await gate;
      return store.get(key);
    },
  });
  const feed = new ResultFeed(pubsub, gated, keys);
  const watching = feed.watch(id);
  await reading;
  const closed = feed.close(0);
  release();
  return { it: await watching, closed };
}

/** The watch's next step, or a failure if it is still open after 5 s (a hang, not a timing). */
function nextOrHang<T>(it: AsyncIterator<T>): Promise<IteratorResult<T>> {
  return Promise.race([
    it.next(),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the watch is still open after shutdown')), 5000).unref()),
  ]);
}

describe('a synchronous reply that reaches no subscriber', () => {
  beforeAll(() => Promise.all([redis, pubsub.getPublisher() as Redis, pubsub.getSubscriber() as Redis].map((r) => whenReady(r))));

  it('is published again until the API’s reply channel is subscribed (a reconnect, a slot that moved), and heard once', async () => {
    const instance = randomUUID();
    const channel = keys.replyChannel(instance);
    const publisher = new ReplyPublisher(redis);
    const reply: SyncReply = { id: randomUUID(), status: 'COMPLETED', parts: [], queueMs: 0, inferenceMs: 0, batchRows: 1 };
    let unheard = 0;
    // Nobody listens on the channel yet: the first publish reaches no one.
    expect(await publisher.publish(channel, reply)).toBe(0);
    await publisher.send(channel, reply, { giveUp: () => false, onUnheard: () => void unheard++ });
    // The API's subscriber comes (back): the reply still reaches the request that waits for it.
    const feed = new ResultFeed(pubsub, store, keys, instance);
    const heard: SyncReply[] = [];
    const waiting = feed.expect(reply.id);
    waiting.promise.then(
      (r) => heard.push(r),
      () => {},
    );
    await feed.start();
    const got = await Promise.race([
      waiting.promise,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the reply was lost')), 10_000).unref()),
    ]);
    expect(got).toEqual(reply);
    await feed.close(0);
    expect(heard).toHaveLength(1);
    expect(unheard).toBe(0);
  });

  it('is given up, and said so, when nobody ever listens', async () => {
    const publisher = new ReplyPublisher(redis);
    const reply: SyncReply = { id: randomUUID(), status: 'COMPLETED', parts: [], queueMs: 0, inferenceMs: 0, batchRows: 1 };
    let stop = false;
    const unheard = new Promise<void>((resolve) => {
      void publisher.send(keys.replyChannel(randomUUID()), reply, { giveUp: () => stop, onUnheard: resolve });
    });
    stop = true;
    await unheard;
  });
});

describe('ResultFeed at shutdown', () => {
  beforeAll(() => Promise.all([redis, pubsub.getPublisher() as Redis, pubsub.getSubscriber() as Redis].map((r) => whenReady(r))));
  afterAll(async () => {
    await pubsub.close();
    redis.disconnect();
    await dropPrefix(redisUrl, prefix);
  });

  it('ends a watch whose first read is in flight when closing begins', async () => {
    const rec = queued();
    await store.accept(rec);
    const { it, closed } = await closeDuringFirstRead(rec.id);
    await expect(nextOrHang(it)).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
    await closed;
  });

  it('ends a watch begun after closing began', async () => {
    const rec = queued();
    await store.accept(rec);
    const feed = new ResultFeed(pubsub, store, keys);
    await feed.close(0);
    const it = await feed.watch(rec.id);
    await expect(nextOrHang(it)).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
  });

  it('still delivers a final record its first read found, even when closing began meanwhile', async () => {
    const rec = queued();
    await store.finish({ ...rec, status: 'COMPLETED', finishedAt: Date.now() });
    const { it, closed } = await closeDuringFirstRead(rec.id);
    await expect(nextOrHang(it)).resolves.toMatchObject({ done: false, value: { id: rec.id, status: 'COMPLETED' } });
    await expect(it.next()).resolves.toMatchObject({ done: true });
    await closed;
  });
});

describe('a worker’s result during a Redis outage', () => {
  it('is kept and written once Redis is back, not lost or turned into a failure', async () => {
    const own = await startPrivateRedis();
    const conn = createRedis(own.url, 'producer');
    try {
      await whenReady(conn);
      const ownStore = new ResultStore(conn, keys, 60);
      const record: PredictionRecord = { ...queued(), status: 'COMPLETED', finishedAt: Date.now() };
      await own.stop(true);
      let retried = 0;
      const writing = ownStore.finishDurably(record, { giveUp: () => false, onRetry: () => void retried++ });
      // The plain write fails at once, as it did for the worker (which then spent a retry).
      await expect(ownStore.finish(record)).rejects.toThrow();
      await own.start();
      expect(await writing).toBe(true);
      expect(retried).toBe(1);
      expect((await ownStore.get(record.id))?.status).toBe('COMPLETED');
    } finally {
      conn.disconnect();
      await own.stop();
    }
  });

  it('stops trying when the worker gives up (it is stopping)', async () => {
    const own = await startPrivateRedis();
    const conn = createRedis(own.url, 'producer');
    try {
      await whenReady(conn);
      await own.stop(true);
      let stopping = false;
      const writing = new ResultStore(conn, keys, 60).finishDurably(
        { ...queued(), status: 'COMPLETED' },
        {
          giveUp: () => stopping,
        },
      );
      stopping = true;
      await expect(writing).rejects.toThrow();
    } finally {
      conn.disconnect();
    }
  });
});
