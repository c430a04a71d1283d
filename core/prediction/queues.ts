/**
 * The producer side of the work queues: BullMQ queues per pool (one by default, more with
 * `queue.shards`). Every job gets an explicit priority, because BullMQ runs a job without one
 * before every prioritized job.
 */
import { Queue, type Job, type JobsOptions } from 'bullmq';
import { ServingError, asServingError } from '../errors/registry.ts';
import { POOLS, type PoolName } from '../config/settings.ts';
import { shardOf, type PredictionJobData } from './record.ts';
import { isCluster, keysOf, redisScript, type Keyspace, type RedisClient } from '../redis/connection.ts';
import { waitForReplica } from '../redis/cluster.ts';

/** BullMQ priority of synchronous `predict` work: ahead of every async request. */
export const SYNC_PRIORITY = 1;
/** BullMQ's lowest priority: mirrored work (a rollout's shadow and comparison runs) waits behind every real job. */
export const MIRROR_PRIORITY = 2_097_151;

/**
 * Maps a client priority (1-10, 10 most urgent, default 5) onto BullMQ's (1 runs first).
 * Async work lands on 2..11, behind synchronous work at 1.
 */
export function bullPriority(clientPriority: number | null | undefined): number {
  const p = clientPriority ?? 5;
  if (!Number.isInteger(p) || p < 1 || p > 10) {
    throw new ServingError('BAD_USER_INPUT', `priority: expected an integer from 1 to 10, got ${p}`, { field: 'priority' });
  }
  return 2 + (10 - p);
}

export interface EnqueueOptions {
  priority: number;
  attempts: number;
  backoffMs: number;
  /** Keep finished jobs this long in BullMQ (results live in the ResultStore). */
  keepSeconds: number;
  /** On a cluster, wait for a replica of the queue's master to have the job (core/redis/cluster.ts). */
  replicated?: boolean;
  /** Refuse the job once the pool has this many waiting (split over its shards like `queue.maxDepth`, and never above it). */
  maxDepth?: number;
}

/** Admission to a queue, atomic across every API replica (the script says how). */
const ADMIT = new URL('./scripts/admit-3.lua', import.meta.url);
/** An admission whose add never finished (its API died) stops counting after this long. */
const ADMISSION_TTL_MS = 10_000;

/** Job counts of the states batchline reports. */
export type JobCounts = Record<'wait' | 'prioritized' | 'active' | 'delayed' | 'failed', number>;

export { shardOf };

/** The BullMQ queue names of every shard of every pool, as the keyspace names them. */
export function queueNames(keys: Keyspace, shards: Record<PoolName, number>): { pool: PoolName; shard: number; name: string }[] {
  return POOLS.flatMap((pool) =>
    Array.from({ length: shards[pool] }, (_, shard) => ({ pool, shard, name: keys.queueName(pool, shard, shards[pool]) })),
  );
}

/**
 * The queues of every pool: `queue.shards.<pool>` BullMQ queues each (one by default, the
 * queue batchline always had). A job goes to the shard its id hashes to; a worker consumes
 * every shard of its pool. Priorities are BullMQ's, so they order jobs within a shard; across
 * shards, each is consumed at the pace of its own jobs, so an urgent job waits behind the
 * more urgent (or equal) jobs of its own shard only, whatever the other shards hold.
 * `queue.maxDepth` is split evenly: each shard admits up to ceil(maxDepth / shards).
 */
export class PredictionQueues {
  private readonly shards: Map<PoolName, Queue<PredictionJobData>[]>;
  private readonly maxDepthPerShard: Record<PoolName, number>;
  private readonly maxDepth: number;
  private readonly redis: RedisClient;
  private readonly keys: Keyspace;
  private readonly admit: (
    wait: string,
    prioritized: string,
    admitting: string,
    max: number,
    now: number,
    token: string,
    ttlMs: number,
  ) => Promise<number>;

  constructor(connection: RedisClient, prefix: string, maxDepth: number, shards: Record<PoolName, number> = { cpu: 1, gpu: 1 }) {
    this.maxDepth = maxDepth;
    this.redis = connection;
    this.keys = keysOf(connection, prefix);
    this.admit = redisScript<number>(connection, ADMIT);
    this.maxDepthPerShard = { cpu: Math.ceil(maxDepth / shards.cpu), gpu: Math.ceil(maxDepth / shards.gpu) };
    this.shards = new Map(POOLS.map((pool) => [pool, []]));
    for (const { pool, name } of queueNames(this.keys, shards)) {
      const q = new Queue<PredictionJobData>(name, { connection, prefix });
      // Connection trouble surfaces on the calls that fail (as 503s); the event is noise.
      q.on('error', () => {});
      this.shards.get(pool)!.push(q);
    }
  }

  /** The queue (shard) of `pool` that holds job `id`; shard 0 without an id. */
  queue(pool: PoolName, id?: string): Queue<PredictionJobData> {
    const shards = this.shards.get(pool)!;
    return shards[id === undefined ? 0 : shardOf(id, shards.length)];
  }

  /** Job counts of a pool, summed over its shards. */
  async counts(pool: PoolName): Promise<JobCounts> {
    const all = await Promise.all(this.shards.get(pool)!.map((q) => q.getJobCounts('wait', 'prioritized', 'active', 'delayed', 'failed')));
    const sum: JobCounts = { wait: 0, prioritized: 0, active: 0, delayed: 0, failed: 0 };
    for (const c of all) for (const k of Object.keys(sum) as (keyof JobCounts)[]) sum[k] += c[k] ?? 0;
    return sum;
  }

  /**
   * Adds one prediction job; refuses with QUEUE_FULL once the pool holds `queue.maxDepth`
   * waiting jobs (exactly, whatever the concurrency and the number of API replicas; per shard,
   * its share), and with SERVICE_UNAVAILABLE when Redis is down. With `replicated`, on a
   * cluster, resolves only once a replica of the queue's master has the job.
   */
  async enqueue(data: PredictionJobData, options: EnqueueOptions): Promise<void> {
    const q = this.queue(data.pool, data.id);
    const admitting = this.keys.admitting(q.name);
    const shards = this.shards.get(data.pool)!.length;
    const max = Math.min(
      this.maxDepthPerShard[data.pool],
      options.maxDepth === undefined ? Infinity : Math.ceil(options.maxDepth / shards),
    );
    try {
      const refusedAt = await this.admit(q.keys.wait, q.keys.prioritized, admitting, max, Date.now(), data.id, ADMISSION_TTL_MS);
      if (refusedAt >= 0) {
        throw new ServingError(
          'QUEUE_FULL',
          shards === 1
            ? `the ${data.pool} pool has ${refusedAt} jobs waiting (limit ${this.maxDepth}); try again later`
            : `the ${data.pool} pool's shard has ${refusedAt} jobs waiting (limit ${max} of ${this.maxDepth} over ${shards} shards); try again later`,
          { retryAfterSeconds: 1 },
        );
      }
      const opts: JobsOptions = {
        jobId: data.id,
        priority: options.priority,
        attempts: options.attempts,
        backoff: { type: 'fixed', delay: options.backoffMs },
        // Results live in the ResultStore; a completed job is only bookkeeping.
        removeOnComplete: true,
        removeOnFail: { age: options.keepSeconds, count: 10_000 },
      };
      try {
        await q.add('predict', data, opts);
      } finally {
        // Not awaited: until it lands the job counts twice, which only errs on the safe side.
        this.redis.zrem(admitting, data.id).catch(() => {});
      }
      if (options.replicated && isCluster(this.redis)) await waitForReplica(this.redis, q.keys.wait);
    } catch (e) {
      throw asServingError(e);
    }
  }

  async getJob(pool: PoolName, id: string): Promise<Job<PredictionJobData> | undefined> {
    return this.queue(pool, id).getJob(id);
  }

  /** Removes a job that has not started; false if it is running or gone. */
  async removeIfWaiting(pool: PoolName, id: string): Promise<boolean> {
    try {
      const job = await this.getJob(pool, id);
      if (!job) return false;
      const state = await job.getState();
      if (state !== 'waiting' && state !== 'prioritized' && state !== 'delayed') return false;
      await job.remove();
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.shards.values()].flat().map((q) => q.close()));
  }
}
