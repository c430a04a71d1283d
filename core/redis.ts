/**
 * Redis connections, by role. Producers on the request path fail fast so an outage becomes
 * a 503 instead of a hung request; BullMQ workers and subscribers wait and reconnect.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { isRedisUnavailable } from './errors.ts';

export type RedisRole = 'producer' | 'blocking' | 'subscriber';

/** Reconnect forever, backing off to at most two seconds between tries. */
const retryStrategy = (times: number): number => Math.min(100 * 2 ** Math.min(times, 5), 2000);

export function redisOptions(role: RedisRole): RedisOptions {
  if (role === 'producer') {
    // Auto-pipelining sends the commands of one tick in one write: under load, many
    // requests' SETs and script calls share a syscall.
    return {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2000,
      retryStrategy,
      lazyConnect: false,
      enableAutoPipelining: true,
    };
  }
  return { maxRetriesPerRequest: null, retryStrategy, enableReadyCheck: true };
}

export function createRedis(url: string, role: RedisRole): Redis {
  const redis = new Redis(url, redisOptions(role));
  // Errors surface on the commands that fail; an unhandled 'error' event would only add noise.
  redis.on('error', () => {});
  return redis;
}

/** Resolves once the connection is ready, or rejects after `timeoutMs`. */
export function whenReady(redis: Redis, timeoutMs = 10_000): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      redis.off('ready', onReady);
      reject(new Error(`Redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = (): void => {
      clearTimeout(timer);
      resolve();
    };
    redis.once('ready', onReady);
  });
}

/** Keys and channels batchline uses, all under one prefix. */
export function keyspace(prefix: string) {
  return {
    prediction: (id: string) => `${prefix}:prediction:${id}`,
    resultChannel: (id: string) => `${prefix}:result:${id}`,
    replyChannel: (instance: string) => `${prefix}:reply:${instance}`,
    /** Broadcasts to every API and worker process (models changed, housekeeping). */
    control: `${prefix}:control`,
    modelsFingerprint: `${prefix}:models:fingerprint`,
    /** Predicted class counts of one model version in one minute. */
    driftCounts: (modelKey: string, minute: number) => `${prefix}:drift:counts:${modelKey}:${minute}`,
    driftReport: (modelKey: string) => `${prefix}:drift:report:${modelKey}`,
    schedulersRegistered: (hash: string) => `${prefix}:schedulers:${hash}`,
    /** Live workers and the models they serve (one hash; core/prediction/worker-registry.ts). */
    workers: `${prefix}:workers`,
    /** A client's token bucket (`key:<name>` or `ip:<address>`; core/api/rate-limiter.ts). */
    rateLimit: (client: string) => `${prefix}:ratelimit:${client}`,
    /** Admissions to a pool's queue still being added (core/prediction/queues.ts). BullMQ's own keys are BullMQ's. */
    admitting: (pool: string) => `${prefix}:${pool}:admitting`,
    /** The operations view's sums per second and per 5 s step, and the processes seen (core/live-stats.ts). */
    stats: {
      second: (s: number) => `${prefix}:stats:s:${s}`,
      step: (n: number) => `${prefix}:stats:m:${n}`,
      processes: `${prefix}:stats:processes`,
    },
  };
}
export type Keyspace = ReturnType<typeof keyspace>;

export interface RetryOptions {
  /** Stop trying (the last error is thrown): the caller is stopping, or nobody waits any more. */
  giveUp: () => boolean;
  /** Called once, at the first failure. */
  onRetry?: (e: Error) => void;
  /** Longest pause between tries; they start at 50 ms and double. @defaultValue 2000 */
  maxDelayMs?: number;
}

/**
 * Runs `op` again while Redis is unreachable (a restart, a connection still coming back):
 * what an outage interrupts is done once Redis is back, instead of failing for a reason that
 * is not the work's own. Any other error is thrown at once.
 */
export async function whileUnreachable<T>(op: () => Promise<T>, options: RetryOptions): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await op();
    } catch (e) {
      if (!isRedisUnavailable(e) || options.giveUp()) throw e;
      if (attempt === 0) options.onRetry?.(e as Error);
      await new Promise((r) => setTimeout(r, Math.min(options.maxDelayMs ?? 2000, 50 * 2 ** attempt)));
    }
  }
}
