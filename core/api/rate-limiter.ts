/**
 * Per-client rate limits: a token bucket per API key (or client address) in Redis, so the
 * limit holds across API replicas. One Lua script refills the bucket from Redis's own
 * clock (no skew between replicas), takes a token if there is one, and says how long until
 * the next one. A bucket holds `burst` tokens and refills at `ratePerSecond`; an idle
 * bucket expires once it would be full again.
 *
 * The limiter never blocks a request on Redis: when Redis is unreachable or slow, the
 * request is let through (the request itself then gets its own 503).
 */
import type { Logger } from '../telemetry/logger.ts';
import { keyspace, redisScript, type RedisClient } from '../redis/connection.ts';

export interface RateDecision {
  allowed: boolean;
  /** Tokens left after this request. */
  remaining: number;
  /** Whole seconds until a token is available (>= 1) when refused; 0 when allowed. */
  retryAfterSeconds: number;
}

/** The bucket's script: KEYS[1] bucket; ARGV rate per second, capacity, cost. Returns { allowed, remaining, retryMs }. */
const TOKEN_BUCKET = new URL('./scripts/tokenBucket-1.lua', import.meta.url);

export interface RateLimiterOptions {
  redis: RedisClient;
  prefix: string;
  /** Tokens per second; 0 turns the limiter off. */
  ratePerSecond: number;
  /** Bucket size: requests that may come at once after a quiet spell (at least 1). */
  burst: number;
  logger?: Logger;
  /** Longest wait on Redis before letting the request through. @defaultValue 250 */
  timeoutMs?: number;
}

export class RateLimiter {
  readonly enabled: boolean;
  private readonly bucket?: (key: string, rate: number, capacity: number, cost: number) => Promise<[number, number, number]>;
  private readonly opts: RateLimiterOptions;
  private readonly capacity: number;

  constructor(opts: RateLimiterOptions) {
    this.opts = opts;
    this.enabled = opts.ratePerSecond > 0;
    this.capacity = Math.max(1, Math.floor(opts.burst));
    if (this.enabled) this.bucket = redisScript<[number, number, number]>(opts.redis, TOKEN_BUCKET);
  }

  /** The Redis key of a client's bucket: `<prefix>:ratelimit:<client>`. */
  key(client: string): string {
    return keyspace(this.opts.prefix).rateLimit(client);
  }

  /** Takes one token from `client`'s bucket (`key:<name>` or `ip:<address>`). */
  async take(client: string): Promise<RateDecision> {
    const open: RateDecision = { allowed: true, remaining: this.capacity, retryAfterSeconds: 0 };
    if (!this.enabled) return open;
    let timer: NodeJS.Timeout | undefined;
    try {
      const call = this.bucket!(this.key(client), this.opts.ratePerSecond, this.capacity, 1);
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`rate limiter: no answer from Redis in ${this.opts.timeoutMs ?? 250} ms`)),
          this.opts.timeoutMs ?? 250,
        );
      });
      call.catch(() => {});
      const [allowed, remaining, retryMs] = await Promise.race([call, timeout]);
      return { allowed: allowed === 1, remaining, retryAfterSeconds: allowed === 1 ? 0 : Math.max(1, Math.ceil(retryMs / 1000)) };
    } catch (e) {
      // Fail open: Redis trouble must not turn into refusals; the request meets its own 503.
      this.opts.logger?.debug({ err: (e as Error).message }, 'rate limiter unavailable; request let through');
      return open;
    } finally {
      clearTimeout(timer);
    }
  }
}
