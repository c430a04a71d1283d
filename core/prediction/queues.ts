/**
 * The producer side of the work queues: one BullMQ queue per pool. Every job gets an
 * explicit priority, because BullMQ runs a job without one before every prioritized job.
 */
import { Queue, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { ServingError, asServingError } from '../errors.ts';
import { POOLS, type PoolName } from '../config.ts';
import type { PredictionJobData } from './record.ts';
import { keyspace } from '../redis.ts';

/** BullMQ priority of synchronous `predict` work: ahead of every async request. */
export const SYNC_PRIORITY = 1;

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
}

/**
 * Admission to a pool's queue, atomic across every API replica. KEYS: the queue's `wait` list,
 * its `prioritized` set (BullMQ's own keys) and our set of admissions still being added.
 * ARGV: max depth, now (ms), this admission's token, how long an admission may stay (ms).
 * Returns -1 when admitted, else the depth that refused it. An admission counts from this
 * script until its job is in the queue (briefly twice, never zero times), so concurrent
 * admissions cannot all see room for one more; one left by a process that died ages out.
 */
const ADMIT = `
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[4]))
local depth = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
if depth >= tonumber(ARGV[1]) then return depth end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return -1
`;
/** An admission whose add never finished (its API died) stops counting after this long. */
const ADMISSION_TTL_MS = 10_000;

type AdmittingRedis = Redis & {
  batchlineAdmit(
    wait: string,
    prioritized: string,
    admitting: string,
    max: number,
    now: number,
    token: string,
    ttlMs: number,
  ): Promise<number>;
};

export class PredictionQueues {
  private readonly queues: Map<PoolName, Queue<PredictionJobData>>;
  private readonly maxDepth: number;
  private readonly redis: AdmittingRedis;
  private readonly prefix: string;

  constructor(connection: Redis, prefix: string, maxDepth: number) {
    this.maxDepth = maxDepth;
    this.prefix = prefix;
    if (!('batchlineAdmit' in connection)) connection.defineCommand('batchlineAdmit', { numberOfKeys: 3, lua: ADMIT });
    this.redis = connection as AdmittingRedis;
    this.queues = new Map(
      POOLS.map((pool) => {
        const q = new Queue<PredictionJobData>(pool, { connection, prefix });
        // Connection trouble surfaces on the calls that fail (as 503s); the event is noise.
        q.on('error', () => {});
        return [pool, q];
      }),
    );
  }

  queue(pool: PoolName): Queue<PredictionJobData> {
    return this.queues.get(pool)!;
  }

  /**
   * Adds one prediction job; refuses with QUEUE_FULL once the pool holds `queue.maxDepth`
   * waiting jobs (exactly, whatever the concurrency and the number of API replicas), and with
   * SERVICE_UNAVAILABLE when Redis is down.
   */
  async enqueue(data: PredictionJobData, options: EnqueueOptions): Promise<void> {
    const q = this.queue(data.pool);
    const admitting = keyspace(this.prefix).admitting(data.pool);
    try {
      const refusedAt = await this.redis.batchlineAdmit(
        q.keys.wait,
        q.keys.prioritized,
        admitting,
        this.maxDepth,
        Date.now(),
        data.id,
        ADMISSION_TTL_MS,
      );
      if (refusedAt >= 0) {
        throw new ServingError(
          'QUEUE_FULL',
          `the ${data.pool} pool has ${refusedAt} jobs waiting (limit ${this.maxDepth}); try again later`,
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
    } catch (e) {
      throw asServingError(e);
    }
  }

  async getJob(pool: PoolName, id: string): Promise<Job<PredictionJobData> | undefined> {
    return this.queue(pool).getJob(id);
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
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }
}
