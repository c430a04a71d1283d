/**
 * Prediction records in Redis, with a TTL, and the publication of final ones.
 *
 * The record is written BEFORE it is published (one MULTI), so a subscriber that confirms
 * its SUBSCRIBE and then reads the key can never miss a result: either the read sees it or
 * the message arrives after.
 */
import type { Redis } from 'ioredis';
import type { Keyspace } from './redis.ts';
import type { PredictionRecord } from './prediction.ts';

export class ResultStore {
  private readonly redis: Redis;
  private readonly keys: Keyspace;
  private readonly ttlSeconds: number;

  constructor(redis: Redis, keys: Keyspace, ttlSeconds: number) {
    this.redis = redis;
    this.keys = keys;
    this.ttlSeconds = ttlSeconds;
  }

  /** Records accepted work. */
  async accept(record: PredictionRecord): Promise<void> {
    await this.redis.set(this.keys.prediction(record.id), JSON.stringify(record), 'EX', this.ttlSeconds);
  }

  /** Stores a final record, then publishes it to its subscribers and to a waiting API process. */
  async finish(record: PredictionRecord, replyTo?: string): Promise<void> {
    const json = JSON.stringify(record);
    const multi = this.redis.multi().set(this.keys.prediction(record.id), json, 'EX', this.ttlSeconds).publish(this.keys.resultChannel(record.id), json);
    if (replyTo) multi.publish(replyTo, json);
    const replies = await multi.exec();
    const failed = replies?.find(([err]) => err);
    if (failed) throw failed[0];
  }

  async get(id: string): Promise<PredictionRecord | undefined> {
    const raw = await this.redis.get(this.keys.prediction(id));
    return raw ? (JSON.parse(raw) as PredictionRecord) : undefined;
  }
}
