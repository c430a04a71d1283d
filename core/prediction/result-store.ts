/**
 * Prediction records in Redis, with a TTL, and the publication of final ones to their
 * subscribers. (A synchronous job's reply is stored nowhere: ReplyPublisher in result-feed.ts.)
 *
 * The record is written BEFORE it is published (one script), so a subscriber that confirms
 * its SUBSCRIBE and then reads the key can never miss a result: either the read sees it or
 * the message arrives after. On a cluster the record and its channel share the prediction's
 * slot (core/redis/connection.ts), and the publish is sharded.
 */
import { isCluster, redisScript, whileUnreachable, type Keyspace, type RedisClient, type RetryOptions } from '../redis/connection.ts';
import { waitForReplica } from '../redis/cluster.ts';
import type { PredictionRecord } from './record.ts';

/** Writes a final record and publishes it, only if no final record is there (KEYS: record, channel). */
const FINISH_ONCE = new URL('./scripts/finishOnce-2.lua', import.meta.url);
/** The same for the records of one job at once (KEYS: the records, then their channels). */
const FINISH_MANY = new URL('./scripts/finishMany-n.lua', import.meta.url);

export class ResultStore {
  private readonly redis: RedisClient;
  private readonly keys: Keyspace;
  private readonly ttlSeconds: number;
  private readonly finishOnce: (record: string, channel: string, json: string, ttl: number, publish: string) => Promise<number>;
  private readonly finishManyScript: (...keysThenArgs: (string | number)[]) => Promise<number[]>;
  /** Per-prediction channels are sharded on a cluster (core/redis/cluster.ts says why). */
  private readonly publishCommand: 'PUBLISH' | 'SPUBLISH';

  constructor(redis: RedisClient, keys: Keyspace, ttlSeconds: number) {
    this.redis = redis;
    this.keys = keys;
    this.ttlSeconds = ttlSeconds;
    this.finishOnce = redisScript<number>(redis, FINISH_ONCE);
    this.finishManyScript = redisScript<number[]>(redis, FINISH_MANY);
    this.publishCommand = isCluster(redis) ? 'SPUBLISH' : 'PUBLISH';
  }

  /**
   * On a cluster, waits until a replica holds what this connection wrote to `key`'s master, so
   * that acknowledged work survives that master's failover (core/redis/cluster.ts). One Redis:
   * nothing to wait for.
   */
  async replicated(key: string): Promise<void> {
    if (isCluster(this.redis)) await waitForReplica(this.redis, key);
  }

  /** The key of a prediction's record. */
  key(id: string): string {
    return this.keys.prediction(id);
  }

  /** Records accepted work. */
  async accept(record: PredictionRecord): Promise<void> {
    await this.redis.set(this.keys.prediction(record.id), JSON.stringify(record), 'EX', this.ttlSeconds);
  }

  /**
   * Records the accepted predictions of one job: their SETs leave in one write (the
   * connection pipelines what one tick sends), and on a cluster they share one slot.
   */
  async acceptMany(records: PredictionRecord[]): Promise<void> {
    await Promise.all(records.map((r) => this.accept(r)));
  }

  /** Forgets records that were never handed out (their admission was refused). Not awaited by callers that need no answer. */
  async forget(ids: string[]): Promise<void> {
    if (ids.length) await this.redis.del(...ids.map((id) => this.keys.prediction(id)));
  }

  /** The records of `ids` (one job's: one slot on a cluster), in one call; undefined where none. */
  async getMany(ids: string[]): Promise<(PredictionRecord | undefined)[]> {
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(...ids.map((id) => this.keys.prediction(id)));
    return raws.map((raw) => (raw ? (JSON.parse(raw) as PredictionRecord) : undefined));
  }

  /**
   * `finish` for the records of one job at once (one script; one slot on a cluster): each is
   * written and published only if it is not final yet.
   * @returns per record, whether it was written.
   */
  async finishMany(records: PredictionRecord[]): Promise<boolean[]> {
    if (records.length === 0) return [];
    const keys = records.map((r) => this.keys.prediction(r.id));
    const written = await this.finishManyScript(
      keys.length * 2,
      ...keys,
      ...records.map((r) => this.keys.resultChannel(r.id)),
      this.ttlSeconds,
      this.publishCommand,
      ...records.map((r) => JSON.stringify(r)),
    );
    const out = written.map((w) => w === 1);
    if (out.some(Boolean)) await this.replicated(keys[0]);
    return out;
  }

  /** `finishMany`, tried again while Redis is unreachable, as `finishDurably`. */
  async finishManyDurably(records: PredictionRecord[], options: RetryOptions): Promise<boolean[]> {
    return whileUnreachable(() => this.finishMany(records), options);
  }

  /**
   * Stores a final record, then publishes it to its subscribers; in one script, and only if
   * no final record is there yet, so a job run again after a crash (or a deadline racing a
   * worker) is answered exactly once.
   * @returns false when the prediction was already final (nothing written or published).
   */
  async finish(record: PredictionRecord): Promise<boolean> {
    const json = JSON.stringify(record);
    const key = this.keys.prediction(record.id);
    const written = (await this.finishOnce(key, this.keys.resultChannel(record.id), json, this.ttlSeconds, this.publishCommand)) === 1;
    // Acknowledged to the caller (a worker completing its job, a cancel answering) only once a replica has it.
    if (written) await this.replicated(key);
    return written;
  }

  /**
   * `finish`, tried again while Redis is unreachable (backing off to 2 s): a worker that
   * computed a result during an outage keeps it and writes it once Redis is back, instead of
   * counting the outage as the model's failure and spending a retry on it. Stops trying when
   * `giveUp()` says so (the worker is stopping), and on any other error.
   */
  async finishDurably(record: PredictionRecord, options: RetryOptions): Promise<boolean> {
    return whileUnreachable(() => this.finish(record), options);
  }

  async get(id: string): Promise<PredictionRecord | undefined> {
    const raw = await this.redis.get(this.keys.prediction(id));
    return raw ? (JSON.parse(raw) as PredictionRecord) : undefined;
  }
}
