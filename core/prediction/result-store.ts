/**
 * Prediction records in Redis, with a TTL, and the publication of final ones.
 *
 * The record is written BEFORE it is published (one MULTI), so a subscriber that confirms
 * its SUBSCRIBE and then reads the key can never miss a result: either the read sees it or
 * the message arrives after.
 */
import type { Redis } from 'ioredis';
import { whileUnreachable, type Keyspace, type RetryOptions } from '../redis.ts';
import type { PredictionRecord, SyncReply } from './record.ts';

/**
 * KEYS: record, result channel. ARGV: record JSON, TTL seconds, reply channel or ''.
 * `status` is the record's second field (after `id`), so the first match is the record's own.
 */
const FINISH_ONCE = `
local current = redis.call('GET', KEYS[1])
if current then
  local status = string.match(current, '"status":"(%u+)"')
  if status == 'COMPLETED' or status == 'FAILED' or status == 'CANCELLED' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[1])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[1]) end
return 1
`;

type FinishingRedis = Redis & {
  batchlineFinishOnce(record: string, channel: string, json: string, ttl: number, replyTo: string): Promise<number>;
};

export class ResultStore {
  private readonly redis: Redis;
  private readonly keys: Keyspace;
  private readonly ttlSeconds: number;

  constructor(redis: Redis, keys: Keyspace, ttlSeconds: number) {
    // EVALSHA after the first call: the script body is not resent and rehashed per result.
    if (!('batchlineFinishOnce' in redis)) redis.defineCommand('batchlineFinishOnce', { numberOfKeys: 2, lua: FINISH_ONCE });
    this.redis = redis;
    this.keys = keys;
    this.ttlSeconds = ttlSeconds;
  }

  /** Records accepted work. */
  async accept(record: PredictionRecord): Promise<void> {
    await this.redis.set(this.keys.prediction(record.id), JSON.stringify(record), 'EX', this.ttlSeconds);
  }

  /**
   * Stores a final record, then publishes it to its subscribers and to a waiting API
   * process; in one script, and only if no final record is there yet, so a job run again
   * after a crash (or a deadline racing a worker) is answered exactly once.
   * @returns false when the prediction was already final (nothing written or published).
   */
  async finish(record: PredictionRecord, replyTo?: string): Promise<boolean> {
    const json = JSON.stringify(record);
    const written = await (this.redis as FinishingRedis).batchlineFinishOnce(
      this.keys.prediction(record.id),
      this.keys.resultChannel(record.id),
      json,
      this.ttlSeconds,
      replyTo ?? '',
    );
    return written === 1;
  }

  /**
   * `finish`, tried again while Redis is unreachable (backing off to 2 s): a worker that
   * computed a result during an outage keeps it and writes it once Redis is back, instead of
   * counting the outage as the model's failure and spending a retry on it. Stops trying when
   * `giveUp()` says so (the worker is stopping), and on any other error.
   */
  async finishDurably(record: PredictionRecord, replyTo: string | undefined, options: RetryOptions): Promise<boolean> {
    return whileUnreachable(() => this.finish(record, replyTo), options);
  }

  /** Sends a synchronous job's reply to the API process waiting on it; nothing is stored. */
  async reply(channel: string, reply: SyncReply): Promise<void> {
    await this.redis.publish(channel, JSON.stringify(reply));
  }

  async get(id: string): Promise<PredictionRecord | undefined> {
    const raw = await this.redis.get(this.keys.prediction(id));
    return raw ? (JSON.parse(raw) as PredictionRecord) : undefined;
  }
}
