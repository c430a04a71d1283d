/**
 * Prometheus metrics. Each process has its own registry; the API exports request, cache
 * and queue metrics, a worker exports inference and batching metrics.
 */
import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  type Metric,
  type OpenMetricsContentType,
  type PrometheusContentType,
} from 'prom-client';
import { exemplarLabels } from './trace.ts';

/**
 * Seconds, 1-2.5-5 per decade from 50 µs to 30 s: a model answering in 0.3 ms and one in 3 ms
 * land two buckets apart (the old 1 ms floor put both under it, and Triton's is 100 ms).
 */
export const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

export function createMetrics(role: 'api' | 'worker') {
  // prom-client lets exemplars onto OpenMetrics registries only; `exposition` renders either format.
  const registry = new Registry<OpenMetricsContentType>();
  registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  const defaultLabels = { role };
  registry.setDefaultLabels(defaultLabels);
  collectDefaultMetrics({ register: registry, prefix: 'batchline_process_' });
  return {
    registry,
    defaultLabels,
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
      // The trace of a sampled observation, in OpenMetrics (observeLatency adds it).
      enableExemplars: true,
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
      enableExemplars: true,
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
    // What the alerts of k8s/render/monitoring.ts compare against.
    liveWorkers: new Gauge({
      name: 'batchline_workers',
      help: 'Live workers per pool (heartbeating, with models loaded), from the worker registry: the deployment, not this process',
      labelNames: ['pool'] as const,
      registers: [registry],
    }),
    queueMaxDepth: new Gauge({
      name: 'batchline_queue_max_depth',
      help: 'Jobs a pool may hold waiting before new work is refused with QUEUE_FULL (queue.maxDepth)',
      labelNames: ['pool'] as const,
      registers: [registry],
    }),
    redisUp: new Gauge({
      name: 'batchline_redis_up',
      help: "1 while this process's Redis connection answers, 0 otherwise",
      registers: [registry],
    }),
    modelSlo: new Gauge({
      name: 'batchline_model_slo_seconds',
      help: "Latency objective of one batch's inference (the model's batching.sloMs)",
      labelNames: ['model', 'version'] as const,
      registers: [registry],
    }),
    stalledJobs: new Counter({
      name: 'batchline_stalled_jobs_total',
      help: 'Jobs whose worker stopped renewing their lock (died, blocked, lost Redis), put back for another worker',
      labelNames: ['pool'] as const,
      registers: [registry],
    }),
    modelMemoryBudget: new Gauge({
      name: 'batchline_model_memory_budget_bytes',
      help: "Memory this worker may give to resident model versions (workers.modelMemoryBytes or derived from the container's limit); absent without a budget",
      registers: [registry],
    }),
    residentBytes: new Gauge({
      name: 'batchline_model_resident_bytes',
      help: 'Measured resident memory of each model version loaded in this worker (RSS growth around its load and warm-up, at least its file per inference thread)',
      labelNames: ['model', 'version', 'pinned'] as const,
      registers: [registry],
    }),
    modelLoads: new Counter({
      name: 'batchline_model_loads_total',
      help: 'Model version loads by this worker (on demand or at start) and their outcome: ok, MODEL_TOO_LARGE or MODEL_LOAD_FAILED',
      labelNames: ['model', 'version', 'outcome'] as const,
      registers: [registry],
    }),
    modelLoadSeconds: new Histogram({
      name: 'batchline_model_load_seconds',
      help: 'Time to load a model version: session creation and warm-up run in every inference thread',
      labelNames: ['model'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    coldStartSeconds: new Histogram({
      name: 'batchline_cold_start_seconds',
      help: 'Time a job waited for its model version to load (only jobs that waited)',
      labelNames: ['model'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    loadThrottledSeconds: new Counter({
      name: 'batchline_model_load_throttled_seconds_total',
      help: 'Seconds loads waited for workers.maxModelLoadsPerSecond: above 0, the versions asked for do not fit the budget together',
      registers: [registry],
    }),
    jobsDeferred: new Counter({
      name: 'batchline_jobs_deferred_total',
      help: 'Jobs for a version not in memory handed back to the queue (delayed) while its load waited behind others, so they hold no slot meanwhile',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    modelEvictions: new Counter({
      name: 'batchline_model_evictions_total',
      help: 'Model versions this worker evicted (least recently used, idle) to keep under its model memory budget',
      labelNames: ['model', 'version'] as const,
      registers: [registry],
    }),
    driftAlpha: new Gauge({
      name: 'batchline_drift_alpha',
      help: "The drift monitor's threshold: a p-value under it reports drift (maintenance.driftAlpha)",
      labelNames: ['model', 'version'] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * Observes `seconds` on a latency histogram; when tracing is on and the active span is
 * sampled, its trace and span ids become the bucket's exemplar (OpenMetrics carries them, so a
 * slow bucket leads to a slow trace).
 */
export function observeLatency<T extends string>(histogram: Histogram<T>, labels: Partial<Record<T, string>>, seconds: number): void {
  const exemplar = exemplarLabels();
  // prom-client types exemplar labels as the metric's own label names; they are not.
  histogram.observe({ labels, value: seconds, ...(exemplar ? { exemplarLabels: exemplar as Partial<Record<T, string>> } : {}) });
}

/** Whether an `Accept` header prefers OpenMetrics to the Prometheus text format (q-values weighed; ties go to OpenMetrics). */
export function prefersOpenMetrics(accept: string | null | undefined): boolean {
  if (!accept) return false;
  let openMetrics = 0;
  let text = 0;
  for (const range of accept.split(',')) {
    const [type, ...params] = range.split(';').map((p) => p.trim().toLowerCase());
    const q = Number(params.find((p) => p.startsWith('q='))?.slice(2) ?? 1);
    if (type === 'application/openmetrics-text') openMetrics = Math.max(openMetrics, q);
    else if (type === 'text/plain' || type === '*/*') text = Math.max(text, q);
  }
  return openMetrics > 0 && openMetrics >= text;
}

/**
 * `/metrics` in the format the scraper asked for: OpenMetrics (which alone carries exemplars,
 * the trace ids on latency buckets) when its `Accept` prefers it, as Prometheus's does, else
 * the Prometheus text format. Never `registry.metrics()` itself: prom-client renders
 * OpenMetrics by renaming each counter for good (`foo_total` becomes `foo`, which would break
 * every later text render and the JSON that core/live-stats.ts reads). Each format is rendered
 * from a throwaway registry of stand-ins answering each metric's current values under the
 * name that format wants.
 */
export async function exposition(metrics: Metrics, accept: string | null | undefined): Promise<{ contentType: string; body: string }> {
  const open = prefersOpenMetrics(accept);
  const out = new Registry<OpenMetricsContentType | PrometheusContentType>();
  out.setContentType(open ? Registry.OPENMETRICS_CONTENT_TYPE : Registry.PROMETHEUS_CONTENT_TYPE);
  out.setDefaultLabels(metrics.defaultLabels);
  for (const metric of metrics.registry.getMetricsAsArray() as unknown as (Metric & { name: string })[]) {
    const name = open && metric instanceof Counter ? metric.name.replace(/_total$/, '') : metric.name;
    out.registerMetric({ name, get: async () => ({ ...(await metric.get()), name }) } as unknown as Metric);
  }
  return { contentType: out.contentType, body: await out.metrics() };
}
