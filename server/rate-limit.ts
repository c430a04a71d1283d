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

function limited(retryAfterSeconds: number): GraphQLError {
  return toGraphQLError(new ServingError('RATE_LIMITED', `rate limit exceeded; retry in ${retryAfterSeconds} s`, { retryAfterSeconds }));
}

/**
 * Runs after authentication (list it after useApiKeyAuth): a request without a principal
 * draws from its address's bucket, so a flood of bad keys is limited too.
 */
export function useRateLimit(limiter: RateLimiter): Plugin<Record<string, unknown>, AuthServerContext & { req?: IncomingMessage }> {
  return {
    async onParams({ context, setResult }) {
      if (!limiter.enabled) return;
      const decision = await limiter.take(rateLimitClient(context.principal, context.req));
      if (!decision.allowed) setResult({ errors: [limited(decision.retryAfterSeconds)] });
    },
  };
}

/** For graphql-ws `onSubscribe`: the errors to answer with when over the limit, else undefined. */
export async function wsRateLimit(
  limiter: RateLimiter,
  principal: Principal | undefined,
  req: IncomingMessage,
): Promise<GraphQLError[] | undefined> {
  if (!limiter.enabled) return undefined;
  const decision = await limiter.take(rateLimitClient(principal, req));
  return decision.allowed ? undefined : [limited(decision.retryAfterSeconds)];
}
