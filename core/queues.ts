/**
 * The producer side of the work queues: one BullMQ queue per pool. Every job gets an
 * explicit priority, because BullMQ runs a job without one before every prioritized job.
 */
import { Queue, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { ServingError, asServingError } from './errors.ts';
import { POOLS, type PoolName } from './config.ts';
import type { PredictionJobData } from './prediction.ts';

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

export class PredictionQueues {
  private readonly queues: Map<PoolName, Queue<PredictionJobData>>;
  private readonly maxDepth: number;
  private depthCache = new Map<PoolName, { at: number; depth: number }>();

  constructor(connection: Redis, prefix: string, maxDepth: number) {
    this.maxDepth = maxDepth;
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

  /** Jobs waiting (prioritized included) in a pool; read at most every 250 ms on the request path. */
  async depth(pool: PoolName, fresh = false): Promise<number> {
    const cached = this.depthCache.get(pool);
    const now = Date.now();
    if (!fresh && cached && now - cached.at < 250) return cached.depth;
    const counts = await this.queue(pool).getJobCounts('wait', 'prioritized');
    const depth = (counts.wait ?? 0) + (counts.prioritized ?? 0);
    this.depthCache.set(pool, { at: now, depth });
    return depth;
  }

  /** Adds one prediction job; refuses with QUEUE_FULL past the pool's depth and SERVICE_UNAVAILABLE when Redis is down. */
  async enqueue(data: PredictionJobData, options: EnqueueOptions): Promise<void> {
    try {
      if ((await this.depth(data.pool)) >= this.maxDepth) {
        throw new ServingError('QUEUE_FULL', `the ${data.pool} pool has ${this.maxDepth} jobs waiting; try again later`, { retryAfterSeconds: 1 });
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
      await this.queue(data.pool).add('predict', data, opts);
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
