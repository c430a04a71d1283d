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
const ADMIT = new URL('./scripts/admit-5.lua', import.meta.url);
/** A coalesced job's predictions stop counting (taken by a worker, or one cancelled). */
const RELEASE_PARTS = new URL('./scripts/releaseParts-1.lua', import.meta.url);
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
  private readonly admitScript: (
    wait: string,
    prioritized: string,
    admitting: string,
    parts: string,
    delayed: string,
    max: number,
    now: number,
    jobId: string,
    ttlMs: number,
    wanted: number,
    jobKeyPrefix: string,
  ) => Promise<[number, number]>;
  private readonly releaseScript: (parts: string, jobId: string, count: string) => Promise<number>;

  constructor(connection: RedisClient, prefix: string, maxDepth: number, shards: Record<PoolName, number> = { cpu: 1, gpu: 1 }) {
    this.maxDepth = maxDepth;
    this.redis = connection;
    this.keys = keysOf(connection, prefix);
    this.admitScript = redisScript<[number, number]>(connection, ADMIT);
    this.releaseScript = redisScript<number>(connection, RELEASE_PARTS);
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
   * Predictions beyond the first of the pool's waiting coalesced jobs (summed over its shards):
   * with the waiting jobs, the depth `queue.maxDepth` holds.
   */
  async extraWaitingPredictions(pool: PoolName): Promise<number> {
    const sums = await Promise.all(this.shards.get(pool)!.map((q) => this.redis.hget(this.keys.waitingParts(q.name), '#sum')));
    return sums.reduce((a, v) => a + Math.max(0, Number(v ?? 0)), 0);
  }

  /**
   * Adds one prediction job; refuses with QUEUE_FULL once the pool holds `queue.maxDepth`
   * waiting predictions (exactly, whatever the concurrency and the number of API replicas; per
   * shard, its share), and with SERVICE_UNAVAILABLE when Redis is down. With `replicated`, on
   * a cluster, resolves only once a replica of the queue's master has the job.
   */
  async enqueue(data: PredictionJobData, options: EnqueueOptions): Promise<void> {
    try {
      const admitted = await this.admit(data.pool, data.id, 1, options.maxDepth);
      if (admitted.admitted === 0) throw admitted.refusal!;
      await this.add(data, options);
    } catch (e) {
      throw asServingError(e);
    }
  }

  /**
   * Admits up to `wanted` predictions of job `jobId` (a coalesced job's parts, in order): as
   * many as the pool has room for under `queue.maxDepth`, counted in predictions. The admitted
   * ones count until `add` puts the job in the queue (or `release` takes them back), then until
   * a worker takes the job (`taken`). `refusal` is the QUEUE_FULL error for the rest (none when all were admitted).
   */
  async admit(pool: PoolName, jobId: string, wanted: number, maxDepth?: number): Promise<{ admitted: number; refusal?: ServingError }> {
    const q = this.queue(pool, jobId);
    const shards = this.shards.get(pool)!.length;
    const max = Math.min(this.maxDepthPerShard[pool], maxDepth === undefined ? Infinity : Math.ceil(maxDepth / shards));
    try {
      const [admitted, depth] = await this.admitScript(
        q.keys.wait,
        q.keys.prioritized,
        this.keys.admitting(q.name),
        this.keys.waitingParts(q.name),
        q.keys.delayed,
        max,
        Date.now(),
        jobId,
        ADMISSION_TTL_MS,
        wanted,
        q.toKey(''),
      );
      // Built only for a refusal: an error captures a stack, and most admissions refuse nothing.
      const refusal =
        admitted < wanted
          ? new ServingError(
              'QUEUE_FULL',
              shards === 1
                ? `the ${pool} pool has ${depth} predictions waiting (limit ${this.maxDepth}); try again later`
                : `the ${pool} pool's shard has ${depth} predictions waiting (limit ${max} of ${this.maxDepth} over ${shards} shards); try again later`,
              { retryAfterSeconds: 1 },
            )
          : undefined;
      return { admitted, refusal };
    } catch (e) {
      throw asServingError(e);
    }
  }

  /**
   * Puts an admitted job in its queue. When the add fails, its admission is taken back. With
   * `replicated`, on a cluster, resolves only once a replica of the queue's master has it.
   */
  async add(data: PredictionJobData, options: EnqueueOptions): Promise<void> {
    const q = this.queue(data.pool, data.id);
    const admitting = this.keys.admitting(q.name);
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
      try {
        await q.add('predict', data, opts);
      } catch (e) {
        this.release(data.pool, data.id, 'all').catch(() => {});
        throw e;
      } finally {
        // Not awaited: until it lands the job counts twice, which only errs on the safe side.
        this.redis.zrem(admitting, data.id).catch(() => {});
      }
      if (options.replicated && isCluster(this.redis)) await waitForReplica(this.redis, q.keys.wait);
    } catch (e) {
      throw asServingError(e);
    }
  }

  /** Gives back the admission of a job that will not be added (its records could not be written). */
  async unadmit(pool: PoolName, jobId: string): Promise<void> {
    const q = this.queue(pool, jobId);
    await Promise.all([this.redis.zrem(this.keys.admitting(q.name), jobId), this.release(pool, jobId, 'all')]);
  }

  /**
   * A coalesced job's predictions beyond its first stop counting against `queue.maxDepth`:
   * all when a worker takes it, one when a part is cancelled.
   * @returns how many the job counted beyond its first before (0: none, or taken already).
   */
  async release(pool: PoolName, jobId: string, count: number | 'all'): Promise<number> {
    const q = this.queue(pool, jobId);
    return this.releaseScript(this.keys.waitingParts(q.name), jobId, String(count));
  }

  async getJob(pool: PoolName, id: string): Promise<Job<PredictionJobData> | undefined> {
    return this.queue(pool, id).getJob(id);
  }

  /** Whether job `id` is in its queue and not started (waiting, prioritized or delayed). */
  async isWaiting(pool: PoolName, id: string): Promise<boolean> {
    const job = await this.getJob(pool, id);
    if (!job) return false;
    const state = await job.getState();
    return state === 'waiting' || state === 'prioritized' || state === 'delayed';
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

/**
 * For a worker: releases a taken coalesced job's predictions beyond the first from
 * `queue.maxDepth` (PredictionQueues.release, for a process without the producer's queues).
 * The script is defined here, at once: a command defined while an auto-pipeline of the
 * connection is open would be missing from it.
 */
export function takenPartsReleaser(redis: RedisClient, keys: Keyspace): (queueName: string, jobId: string) => Promise<void> {
  const release = redisScript<number>(redis, RELEASE_PARTS);
  return async (queueName, jobId) => {
    await release(keys.waitingParts(queueName), jobId, 'all');
  };
}
