/**
 * The connection cap (`http.maxConnections`): the process keeps descriptors for its probes.
 *
 * Every accepted connection is counted; one accepted while `cap` others are open is *over*.
 * Over, its requests answer 503 SERVICE_UNAVAILABLE with `Retry-After` (the connection is
 * closed after the answer) and its WebSocket upgrade is refused with the same 503, except
 * `/health`, `/ready` and `/metrics`, which always answer: a liveness probe does not restart
 * a replica that is full, and so drop every subscription it holds. Connections opened before
 * the cap was reached (subscriptions held, keep-alive clients) go on as before.
 *
 * A connection over `cap + PROBE_RESERVE` is closed at once (node's `server.maxConnections`),
 * and an over connection left idle is closed after OVER_IDLE_MS, so a flood cannot take the
 * descriptors the probes need. By default the cap comes from the process's open-file limit,
 * less room for Redis connections, log files, the model repository and that reserve.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { ServingError } from '../core/errors/registry.ts';
import type { Logger } from '../core/telemetry/logger.ts';
import { errorResponseBody } from './errors.ts';

/** Connections over the cap that are still accepted, so that probes find a way in. */
export const PROBE_RESERVE = 64;
/** How long a connection over the cap may stay idle before it is closed. */
export const OVER_IDLE_MS = 10_000;
/** The paths that answer whatever the number of connections. */
export const ALWAYS_ANSWERED = new Set(['/health', '/ready', '/metrics']);
/** The cap when the open-file limit cannot be read (not Linux). */
const FALLBACK_CAP = 1000;

/** The soft open-file limit of this process (node raises it to the hard limit at start), or undefined. */
export function openFileLimit(limits = '/proc/self/limits'): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(limits, 'utf8'));
    if (!m) return undefined;
    return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return undefined;
  }
}

/**
 * `http.maxConnections` as set, or derived from the open-file limit: a tenth of it (at least
 * 256) stays for everything else the process opens, then PROBE_RESERVE for the probes.
 */
export function connectionCap(configured: number, limit = openFileLimit()): number {
  if (configured > 0) return Math.floor(configured);
  if (limit === undefined) return FALLBACK_CAP;
  return Math.max(16, limit - Math.max(256, Math.floor(limit / 10)) - PROBE_RESERVE);
}

export interface ConnectionCap {
  readonly cap: number;
  /** Connections open now. */
  open(): number;
  /**
   * Answers a request on a connection over the cap with 503 (true), or lets it through
   * (false): under the cap, or one of the paths that always answer.
   */
  refuseRequest(req: IncomingMessage, res: ServerResponse, path: string | undefined): boolean;
  /** Whether a WebSocket upgrade on this request's connection is refused (and counts it). */
  refuseUpgrade(req: IncomingMessage): boolean;
}

export function capConnections(http: Server, options: { cap: number; logger: Logger; rejected: (code: string) => void }): ConnectionCap {
  const { cap, logger, rejected } = options;
  const overCap = new WeakSet<Socket>();
  let open = 0;
  http.maxConnections = cap + PROBE_RESERVE;
  http.on('connection', (socket: Socket) => {
    open++;
    socket.once('close', () => open--);
    if (open <= cap) return;
    overCap.add(socket);
    socket.setTimeout(OVER_IDLE_MS);
  });
  // Node closes a connection past `maxConnections` before any request: counted, not answered.
  http.on('drop', () => refused('dropped'));

  let refusedSince = 0;
  let lastLog = 0;
  const refused = (how: 'request' | 'upgrade' | 'dropped'): void => {
    rejected('SERVICE_UNAVAILABLE');
    refusedSince++;
    const now = Date.now();
    if (now - lastLog < 10_000) return;
    logger.warn(
      { code: 'SERVICE_UNAVAILABLE', maxConnections: cap, open, refused: refusedSince, last: how },
      `connection cap reached: ${refusedSince} new connection(s) refused (http.maxConnections ${cap})`,
    );
    lastLog = now;
    refusedSince = 0;
  };
  const error = (): ServingError => new ServingError('SERVICE_UNAVAILABLE', `too many connections (http.maxConnections ${cap})`);

  return {
    cap,
    open: () => open,
    refuseRequest(req, res, path) {
      if (!overCap.has(req.socket)) return false;
      // The connection is given back after this answer, whatever it was.
      res.setHeader('connection', 'close');
      if (path !== undefined && ALWAYS_ANSWERED.has(path)) return false;
      const err = error();
      refused('request');
      res.writeHead(err.status, {
        'content-type': 'application/json',
        'retry-after': String(err.retryAfterSeconds ?? 1),
      });
      res.end(errorResponseBody(err));
      req.resume();
      return true;
    },
    refuseUpgrade(req) {
      if (!overCap.has(req.socket)) return false;
      refused('upgrade');
      return true;
    },
  };
}
