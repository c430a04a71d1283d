/**
 * The rollout's Prometheus metrics, on the API process's registry. Counters are this
 * process's (sum them across replicas); the gauges are the whole deployment's, read from the
 * comparison figures in Redis when /metrics is scraped, as the drift gauges are.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export function createRolloutMetrics(registry: Registry) {
  const registers = [registry];
  return {
    routed: new Counter({
      name: 'batchline_rollout_requests_total',
      help: 'Requests by the version that answered and how it was chosen: stable, canary, or named by the client',
      labelNames: ['model', 'version', 'route'] as const,
      registers,
    }),
    mirrored: new Counter({
      name: 'batchline_rollout_mirrored_total',
      help: 'Runs on a second version after an answer (shadow, or the stable for a canary request), by outcome: compared, failed, shed',
      labelNames: ['model', 'kind', 'version', 'outcome'] as const,
      registers,
    }),
    comparedRows: new Counter({
      name: 'batchline_rollout_compared_rows_total',
      help: 'Rows whose labels both versions of a comparison gave',
      labelNames: ['model', 'kind'] as const,
      registers,
    }),
    agreedRows: new Counter({
      name: 'batchline_rollout_agreed_rows_total',
      help: 'Compared rows whose labels agree',
      labelNames: ['model', 'kind'] as const,
      registers,
    }),
    rollbacks: new Counter({
      name: 'batchline_rollout_rollbacks_total',
      help: 'Canaries rolled back, by the gate that fired (error-rate, agreement, drift) or admin',
      labelNames: ['model', 'version', 'gate'] as const,
      registers,
    }),
    captured: new Counter({
      name: 'batchline_capture_total',
      help: 'Sampled requests by what became of their capture: written, or dropped (too-large, backlog, redis-error)',
      labelNames: ['model', 'outcome'] as const,
      registers,
    }),
    capturePending: new Gauge({
      name: 'batchline_capture_pending',
      help: 'Capture writes this process has waiting on Redis (past 64, new captures are dropped as backlog)',
      registers,
    }),
    trafficPercent: new Gauge({
      name: 'batchline_rollout_traffic_percent',
      help: "Share of a model's requests without a version each version gets (stable, canary), or is mirrored to (shadow)",
      labelNames: ['model', 'version', 'role'] as const,
      registers,
    }),
    agreement: new Gauge({
      name: 'batchline_rollout_agreement_ratio',
      help: 'Share of compared rows whose labels agree, per version pair since it began (deployment-wide)',
      labelNames: ['model', 'kind', 'stable', 'candidate'] as const,
      registers,
    }),
    maxAbsDiff: new Gauge({
      name: 'batchline_rollout_max_abs_diff',
      help: 'Largest absolute difference between the two versions of a pair over every compared output value (deployment-wide)',
      labelNames: ['model', 'kind', 'stable', 'candidate'] as const,
      registers,
    }),
    maxRelDiff: new Gauge({
      name: 'batchline_rollout_max_rel_diff',
      help: 'Largest relative difference |a-b|/max(|a|,|b|) between the two versions of a pair (deployment-wide)',
      labelNames: ['model', 'kind', 'stable', 'candidate'] as const,
      registers,
    }),
    errorRate: new Gauge({
      name: 'batchline_rollout_error_rate',
      help: "Share of a pair's requests (stable side, candidate side) that failed with the version's fault (deployment-wide)",
      labelNames: ['model', 'kind', 'version', 'side'] as const,
      registers,
    }),
    latencyDelta: new Gauge({
      name: 'batchline_rollout_latency_delta_seconds',
      help: "Candidate minus stable latency at a quantile, per version pair (a shadow's includes waiting behind real work)",
      labelNames: ['model', 'kind', 'stable', 'candidate', 'quantile'] as const,
      registers,
    }),
  };
}

export type RolloutMetrics = ReturnType<typeof createRolloutMetrics>;
