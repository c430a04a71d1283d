/**
 * GET /metrics: Prometheus text, or OpenMetrics when the scraper prefers it, with the gauges
 * that are read from Redis when scraped.
 */
import type { Plugin } from 'graphql-yoga';
import { exposition, type Metrics } from '../core/telemetry/metrics.ts';
import type { PredictionQueues } from '../core/prediction/queues.ts';
import type { WorkerRegistry } from '../core/control/worker-registry.ts';
import { POOLS } from '../core/config/settings.ts';

/** Queue depths by pool and state, read at scrape time. */
export async function collectQueueDepth(queues: PredictionQueues, metrics: Metrics): Promise<void> {
  for (const pool of POOLS) {
    const counts = await queues.counts(pool);
    for (const [state, n] of Object.entries(counts)) metrics.queueJobs.set({ pool, state }, n);
    metrics.queueDepth.set({ pool }, (counts.wait ?? 0) + (counts.prioritized ?? 0));
  }
}

/**
 * Live workers (with models loaded) per pool, and whether Redis answered: the registry read is
 * this scrape's Redis round trip, so a failure is what `batchline_redis_up` 0 means.
 */
export async function collectWorkers(workers: WorkerRegistry, metrics: Metrics): Promise<void> {
  try {
    const alive = await workers.alive();
    for (const pool of POOLS) metrics.liveWorkers.set({ pool }, alive.filter((w) => w.pool === pool && w.models.length > 0).length);
    metrics.redisUp.set(1);
  } catch (e) {
    metrics.redisUp.set(0);
    throw e;
  }
}

/** Answers /metrics; `collect` refreshes what is read at scrape time (a failure leaves the last values). */
export function useMetricsEndpoint(metrics: Metrics, collect: readonly (() => Promise<void>)[]): Plugin {
  return {
    async onRequest({ request, url, endResponse, fetchAPI }) {
      if (url.pathname !== '/metrics') return;
      for (const c of collect) await c().catch(() => {});
      const { contentType, body } = await exposition(metrics, request.headers.get('accept'));
      endResponse(new fetchAPI.Response(body, { headers: { 'content-type': contentType } }));
    },
  };
}
