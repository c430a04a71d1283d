/**
 * Per-client rate limits on the GraphQL endpoint (core/api/rate-limiter.ts holds the bucket).
 * A request over its limit answers 429 RATE_LIMITED with `Retry-After` (whole seconds) and
 * `extensions.retryAfter`; over WebSocket, the refused operation gets the same error.
 * Clients are API keys by name when auth is on, else client addresses.
 */
import type { IncomingMessage } from 'node:http';
import type { GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { ServingError } from '../core/errors/registry.ts';
import type { RateLimiter } from '../core/api/rate-limiter.ts';
import type { AuthServerContext } from './auth.ts';
import type { Principal } from '../core/api/authorization.ts';
import { toGraphQLError } from './errors.ts';

/** The bucket a request draws from: `key:<name>` for a known key, else `ip:<address>`. */
export function rateLimitClient(principal: Principal | undefined, req: { socket?: { remoteAddress?: string } } | undefined): string {
  if (principal && !principal.anonymous) return `key:${principal.name}`;
  return `ip:${req?.socket?.remoteAddress ?? 'unknown'}`;
}

/**
 * Draws one request from its client's bucket: the RATE_LIMITED error to answer with when the
 * bucket is empty, else undefined (and always undefined with limits off). Every door asks this.
 */
export async function rateLimitRefusal(
  limiter: RateLimiter,
  principal: Principal | undefined,
  req: { socket?: { remoteAddress?: string } } | undefined,
): Promise<ServingError | undefined> {
  if (!limiter.enabled) return undefined;
  const { allowed, retryAfterSeconds } = await limiter.take(rateLimitClient(principal, req));
  return allowed
    ? undefined
    : new ServingError('RATE_LIMITED', `rate limit exceeded; retry in ${retryAfterSeconds} s`, { retryAfterSeconds });
}

/**
 * Runs after authentication (list it after useApiKeyAuth): a request without a principal
 * draws from its address's bucket, so a flood of bad keys is limited too.
 */
export function useRateLimit(limiter: RateLimiter): Plugin<Record<string, unknown>, AuthServerContext & { req?: IncomingMessage }> {
  return {
    async onParams({ context, setResult }) {
      const refusal = await rateLimitRefusal(limiter, context.principal, context.req);
      if (refusal) setResult({ errors: [toGraphQLError(refusal)] });
    },
  };
}

/** For graphql-ws `onSubscribe`: the errors to answer with when over the limit, else undefined. */
export async function wsRateLimit(
  limiter: RateLimiter,
  principal: Principal | undefined,
  req: IncomingMessage,
): Promise<GraphQLError[] | undefined> {
  const refusal = await rateLimitRefusal(limiter, principal, req);
  return refusal && [toGraphQLError(refusal)];
}
