/**
 * The operations view, API side: the page (server/dashboard/, plain ES modules served as
 * they are, so there is nothing to build) at `/` and `/dashboard`; its figures
 * (`serverStats`, resolvers/ops-stats.ts, computed by core/operations/view.ts); this process's
 * share of the deployment's live sums (core/operations/live-stats.ts); and a count of refusals by code,
 * which the request counters miss for rate limits (refused before a model is known).
 */
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { extname } from 'node:path';
import type { RedisClient } from '../core/redis/connection.ts';
import { Counter } from 'prom-client';
import type { Plugin } from 'graphql-yoga';
import type { BatchlineConfig } from '../core/config/settings.ts';
import type { Metrics } from '../core/telemetry/metrics.ts';
import type { PredictionQueues } from '../core/prediction/queues.ts';
import type { ModelCatalog } from '../core/api/catalog.ts';
import type { Rollout } from '../core/rollout/rollout.ts';
import { StatsRecorder } from '../core/operations/live-stats.ts';
import { OpsStats, REJECTION_CODES } from '../core/operations/view.ts';
import type { OpsContext } from '../resolvers/ops-stats.ts';
import { useGraphiQLAssets } from './graphiql.ts';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/** The page's files, read once: only these names are served, so no path reaches elsewhere. */
function pageFiles(): Map<string, { type: string; body: Uint8Array<ArrayBuffer> }> {
  const dir = new URL('./dashboard/', import.meta.url);
  const files = new Map<string, { type: string; body: Uint8Array<ArrayBuffer> }>();
  for (const name of readdirSync(dir)) {
    const type = TYPES[extname(name)];
    if (type) files.set(name, { type, body: new Uint8Array(readFileSync(new URL(name, dir))) });
  }
  return files;
}

/** GET / and /dashboard: the page; /dashboard/<file>: its scripts and styles. */
export function useDashboardPages(): Plugin {
  const files = pageFiles();
  return {
    onRequest({ request, url, endResponse, fetchAPI }) {
      if (request.method !== 'GET' && request.method !== 'HEAD') return;
      const path = url.pathname;
      const name =
        path === '/' || path === '/dashboard' || path === '/dashboard/'
          ? 'index.html'
          : path.startsWith('/dashboard/')
            ? path.slice('/dashboard/'.length)
            : undefined;
      if (name === undefined) return;
      const file = files.get(name);
      if (!file) {
        endResponse(new fetchAPI.Response('not found', { status: 404, headers: { 'content-type': 'text/plain' } }));
        return;
      }
      // Small files: revalidated each time, so a new release is picked up at once.
      endResponse(
        new fetchAPI.Response(request.method === 'HEAD' ? null : file.body, {
          headers: { 'content-type': file.type, 'cache-control': 'no-cache' },
        }),
      );
    },
  };
}

/** Counts every HTTP or SSE response that refused work with 429, 503 or 504, by code. */
export function useRejectionCount(counter: Counter<'code'>): Plugin {
  const codes = new Set<string>(REJECTION_CODES);
  return {
    onResultProcess({ result }) {
      if (Symbol.asyncIterator in (result as object)) return;
      for (const r of Array.isArray(result) ? result : [result as Exclude<typeof result, AsyncIterable<unknown> | unknown[]>]) {
        const seen = new Set<string>();
        for (const e of r.errors ?? []) {
          const code = (e.extensions as { code?: unknown } | undefined)?.code;
          if (typeof code === 'string' && codes.has(code)) seen.add(code);
        }
        for (const code of seen) counter.inc({ code });
      }
    },
  };
}

export interface Ops {
  context: OpsContext;
  plugins: Plugin[];
  /** Counts a refusal answered outside yoga (the inference protocol's doors, the connection cap); codes other than 429, 503 and 504 are ignored. */
  countRejection(code: string): void;
  /** Ends live `serverStats` subscriptions (shutdown step one). */
  endSubscriptions(): void;
  /** Adds this process's last counts and leaves the process list; before Redis is disconnected. */
  close(): Promise<void>;
}

export function createOps(deps: {
  config: BatchlineConfig;
  redis: RedisClient;
  queues: PredictionQueues;
  catalog: ModelCatalog;
  metrics: Metrics;
  authEnabled: boolean;
  rollout?: Pick<Rollout, 'report'>;
}): Ops {
  const { config, redis, metrics } = deps;
  const rejections = new Counter({
    name: 'batchline_rejections_total',
    help: 'Responses that refused work with 429, 503 or 504, by code (every GraphQL operation over HTTP and SSE, the inference protocol over REST and gRPC, and connections over http.maxConnections)',
    labelNames: ['code'] as const,
    registers: [metrics.registry],
  });
  const recorder = new StatsRecorder({
    redis,
    prefix: config.redis.prefix,
    registry: metrics.registry,
    process: { id: randomUUID(), role: 'api' },
  });
  recorder.start();
  const closing = new AbortController();
  return {
    context: { stats: new OpsStats(deps), graphiql: config.http.graphiql, authEnabled: deps.authEnabled, closing: closing.signal },
    plugins: [useDashboardPages(), useRejectionCount(rejections), ...(config.http.graphiql ? [useGraphiQLAssets()] : [])],
    countRejection: (code) => {
      if ((REJECTION_CODES as readonly string[]).includes(code)) rejections.inc({ code });
    },
    endSubscriptions: () => closing.abort(),
    close: () => {
      closing.abort();
      return recorder.close();
    },
  };
}
