/**
 * Prometheus metrics. Each process has its own registry; the API exports request, cache
 * and queue metrics, a worker exports inference and batching metrics.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export function createMetrics(role: 'api' | 'worker') {
  const registry = new Registry();
  registry.setDefaultLabels({ role });
  collectDefaultMetrics({ register: registry, prefix: 'batchline_process_' });
  return {
    registry,
    requests: new Counter({
      name: 'batchline_requests_total',
      help: 'Prediction requests by model, operation and outcome (an error code or ok)',
      labelNames: ['model', 'operation', 'outcome'] as const,
      registers: [registry],
    }),
    latency: new Histogram({
      name: 'batchline_latency_seconds',
      help: 'Prediction latency by phase: queue (enqueue to start), inference (model run), total (request to answer)',
      labelNames: ['model', 'phase'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    cacheHits: new Counter({
      name: 'batchline_cache_hits_total',
      help: 'Results served from the cache',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    cacheMisses: new Counter({
      name: 'batchline_cache_misses_total',
      help: 'Cache lookups that ran inference',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'batchline_queue_depth',
      help: 'Jobs waiting for a worker (wait + prioritized) per pool; what autoscaling watches',
      labelNames: ['pool'] as const,
      registers: [registry],
    }),
    queueJobs: new Gauge({
      name: 'batchline_queue_jobs',
      help: 'Jobs by pool and BullMQ state',
      labelNames: ['pool', 'state'] as const,
      registers: [registry],
    }),
    jobs: new Counter({
      name: 'batchline_worker_jobs_total',
      help: 'Jobs a worker finished, by model and outcome',
      labelNames: ['model', 'outcome'] as const,
      registers: [registry],
    }),
    batchRows: new Histogram({
      name: 'batchline_batch_rows',
      help: 'Rows per inference',
      labelNames: ['model'] as const,
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers: [registry],
    }),
    edgeBatchRows: new Histogram({
      name: 'batchline_edge_batch_rows',
      help: 'Rows per job the API sent for synchronous requests (its edge batches), by model and why it was sent',
      labelNames: ['model', 'reason'] as const,
      buckets: [1, 2, 4, 8, 16, 32, 64],
      registers: [registry],
    }),
    batchLatency: new Histogram({
      name: 'batchline_batch_inference_seconds',
      help: 'Time of one batched inference',
      labelNames: ['model'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    batchClosed: new Counter({
      name: 'batchline_batches_total',
      help: 'Batches by the reason they closed: full, timeout, deadline, idle',
      labelNames: ['model', 'reason'] as const,
      registers: [registry],
    }),
    driftPValue: new Gauge({
      name: 'batchline_drift_p_value',
      help: 'p-value of the chi-square test of recent predicted classes against the training distribution (low means drift)',
      labelNames: ['model', 'version'] as const,
      registers: [registry],
    }),
    driftStatistic: new Gauge({
      name: 'batchline_drift_chi_square',
      help: 'Chi-square statistic of recent predicted classes against the training distribution',
      labelNames: ['model', 'version'] as const,
      registers: [registry],
    }),
    executionProvider: new Gauge({
      name: 'batchline_execution_provider',
      help: 'The execution provider a worker pool runs (value 1), by pool, provider and the workers.executionProvider asked for',
      labelNames: ['pool', 'provider', 'requested'] as const,
      registers: [registry],
    }),
    providerSkipped: new Gauge({
      name: 'batchline_execution_provider_skipped',
      help: 'Providers the chain skipped before the one it runs (value 1), by pool, provider and why: not-installed, no-adapter, session-failed, warm-up-failed',
      labelNames: ['pool', 'provider', 'reason'] as const,
      registers: [registry],
    }),
    batchLimit: new Gauge({
      name: 'batchline_batch_limit',
      help: 'Current batch size limit per model (adaptive policies move it)',
      labelNames: ['model', 'policy'] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
