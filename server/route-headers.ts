/**
 * Request headers the rollout reads: `x-batchline-route-key` (a client's key that keeps it on
 * one version while a canary runs; core/rollout/router.ts) and W3C `traceparent` (the trace
 * id a captured payload is kept with). Over WebSocket, the upgrade request's headers.
 */
import type { IncomingMessage } from 'node:http';

export const ROUTE_KEY_HEADER = 'x-batchline-route-key';

function header(headers: Headers | IncomingMessage['headers'] | undefined, name: string): string | undefined {
  // yoga's Request may carry a Headers ponyfill, not the global class: test for the method.
  const raw =
    typeof (headers as Headers | undefined)?.get === 'function'
      ? (headers as Headers).get(name)
      : (headers as IncomingMessage['headers'] | undefined)?.[name];
  const value = Array.isArray(raw) ? raw[0] : raw;
  return value ?? undefined;
}

/** The client's route key, if it sent a non-empty one. */
export function routeKeyOf(headers: Headers | IncomingMessage['headers'] | undefined): string | undefined {
  const key = header(headers, ROUTE_KEY_HEADER)?.trim();
  return key ? key : undefined;
}

/** The trace id of a well-formed `traceparent` (version 00: `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero). */
export function traceIdOf(headers: Headers | IncomingMessage['headers'] | undefined): string | undefined {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/.exec(header(headers, 'traceparent')?.trim() ?? '');
  return m && !/^0+$/.test(m[1]) && !/^0+$/.test(m[2]) ? m[1] : undefined;
}
