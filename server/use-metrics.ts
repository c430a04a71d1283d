/** GET /metrics: Prometheus text, with the gauges that are read from Redis when scraped. */
import type { Plugin } from 'graphql-yoga';
import type { Metrics } from '../core/telemetry/metrics.ts';
import type { PredictionQueues } from '../core/prediction/queues.ts';
import { POOLS } from '../core/config/settings.ts';

/** Queue depths by pool and state, read at scrape time. */
export async function collectQueueDepth(queues: PredictionQueues, metrics: Metrics): Promise<void> {
  for (const pool of POOLS) {
    const counts = await queues.counts(pool);
    for (const [state, n] of Object.entries(counts)) metrics.queueJobs.set({ pool, state }, n);
    metrics.queueDepth.set({ pool }, (counts.wait ?? 0) + (counts.prioritized ?? 0));
  }
}

/** Answers /metrics; `collect` refreshes what is read at scrape time (a failure leaves the last values). */
export function useMetricsEndpoint(metrics: Metrics, collect: readonly (() => Promise<void>)[]): Plugin {
  return {
    async onRequest({ url, endResponse, fetchAPI }) {
      if (url.pathname !== '/metrics') return;
      for (const c of collect) await c().catch(() => {});
      endResponse(new fetchAPI.Response(await metrics.registry.metrics(), { headers: { 'content-type': metrics.registry.contentType } }));
    },
  };
}
