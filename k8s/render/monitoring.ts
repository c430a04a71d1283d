/**
 * Monitoring for the Prometheus Operator: a ServiceMonitor scraping `/metrics` of the API
 * (port `http`) and of every worker pool (its headless Service, port `metrics`), and a
 * PrometheusRule with the alerts an operator would otherwise write by hand. Each alert has a
 * severity, a summary, a description and a `runbook_url` pointing at its entry in
 * k8s/README.md (Alerts). The Prometheus Operator names each scrape job after the Service,
 * so the rules select `job="<name>-api"` and `job="<name>-worker-<pool>"`.
 */
import type { IServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import type { IPrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { ERROR_CODES, type ErrorCode } from '../../core/errors/registry.ts';
import type { PoolSizing } from '../plan.ts';
import type { ModelServer } from '../resource.ts';
import { componentName, metadata } from './common.ts';

/** Outcomes that refuse work for want of capacity: 503s a client retries after `Retry-After`. */
export const REFUSAL_CODES = (Object.keys(ERROR_CODES) as ErrorCode[]).filter(
  (c) => ERROR_CODES[c].status === 503 && 'retryAfterSeconds' in ERROR_CODES[c],
);
/** Outcomes that are the server's failure: every other 5xx (lost work and deadlines included). */
export const FAILURE_CODES = (Object.keys(ERROR_CODES) as ErrorCode[]).filter(
  (c) => ERROR_CODES[c].status >= 500 && !REFUSAL_CODES.includes(c),
);

type Severity = 'critical' | 'warning';

/** One alerting rule, as the PrometheusRule holds it. */
export type AlertRule = NonNullable<NonNullable<IPrometheusRule['spec']['groups']>[number]['rules']>[number];

/** The labels every rendered object carries, plus the ones the Prometheus selects on. */
function monitoringMetadata(ms: ModelServer, name: string) {
  const meta = metadata(ms, name, 'monitoring');
  meta.labels = { ...meta.labels, ...ms.spec.monitoring.labels };
  return meta;
}

export function serviceMonitor(ms: ModelServer, pools: PoolSizing[]): IServiceMonitor {
  const { interval } = ms.spec.monitoring;
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'ServiceMonitor',
    metadata: monitoringMetadata(ms, ms.metadata.name),
    spec: {
      selector: {
        matchLabels: { 'app.kubernetes.io/name': 'batchline', 'app.kubernetes.io/instance': ms.metadata.name },
        matchExpressions: [
          { key: 'app.kubernetes.io/component', operator: 'In', values: ['api', ...pools.map((p) => `worker-${p.pool}`)] },
        ],
      },
      // A Service without the named port is skipped for that endpoint: `http` is the API's, `metrics` the workers'.
      endpoints: [
        { port: 'http', path: '/metrics', interval },
        { port: 'metrics', path: '/metrics', interval },
      ],
    },
  };
}

/** `{a="1",b=~"2"}` from matchers, the namespace's first when the resource has one. */
function selector(ms: ModelServer, ...matchers: string[]): string {
  const ns = ms.metadata.namespace ? [`namespace="${ms.metadata.namespace}"`] : [];
  return `{${[...ns, ...matchers].join(',')}}`;
}

/** `5m`, `10m`: a `for` at least as long as a worker takes to start, so a rollout does not page. */
function minutes(seconds: number): string {
  return `${Math.max(5, Math.ceil(seconds / 60))}m`;
}

/** The README anchor of an alert (GitHub's heading slugs: lowercase). */
export function runbookAnchor(alert: string): string {
  return alert.toLowerCase();
}

function alert(
  ms: ModelServer,
  name: string,
  severity: Severity,
  expr: string,
  forDuration: string | undefined,
  summary: string,
  description: string,
  labels: Record<string, string> = {},
): AlertRule {
  return {
    alert: name,
    expr,
    ...(forDuration ? { for: forDuration } : {}),
    labels: { severity, ...labels },
    annotations: {
      summary,
      description,
      runbook_url: `${ms.spec.monitoring.runbookBaseUrl}#${runbookAnchor(name)}`,
    },
  };
}

/** The alerting rules of one ModelServer, in the order k8s/README.md lists them. */
export function alertRules(ms: ModelServer, pools: PoolSizing[]): AlertRule[] {
  const { alerts } = ms.spec.monitoring;
  const apiJob = componentName(ms, 'api');
  const workerJobs = `job=~"${pools.map((p) => componentName(ms, `worker-${p.pool}`)).join('|')}"`;
  const api = (...m: string[]) => selector(ms, `job="${apiJob}"`, ...m);
  const workers = (...m: string[]) => selector(ms, workerJobs, ...m);
  const outcomes = (codes: readonly string[]) => `outcome=~"${codes.join('|')}"`;
  const ns: Record<string, string> = ms.metadata.namespace ? { namespace: ms.metadata.namespace } : {};
  const by = (labels: string) => `by (${ms.metadata.namespace ? 'namespace, ' : ''}${labels})`;
  const ratio = (metric: string, sel: (...m: string[]) => string, codes: readonly string[]) =>
    `sum ${by('model')} (rate(${metric}${sel(outcomes(codes))}[5m]))\n  / sum ${by('model')} (rate(${metric}${sel()}[5m]))`;

  const rules: AlertRule[] = [
    alert(
      ms,
      'BatchlineAPIDown',
      'critical',
      `absent(up${api()} == 1)`,
      '2m',
      `No API replica of ${ms.metadata.name} is up`,
      `Prometheus has scraped no API pod of ${apiJob} for 2 minutes: clients cannot reach the service.`,
      { ...ns, job: apiJob },
    ),
  ];
  for (const p of pools) {
    const scaleToZero = p.spec.autoscaling.minReplicas === 0;
    const none = `max ${by('pool')} (batchline_workers${api(`pool="${p.pool}"`)}) == 0`;
    rules.push(
      alert(
        ms,
        'BatchlinePoolWithoutWorkers',
        'critical',
        scaleToZero ? `${none}\nand max ${by('pool')} (batchline_queue_depth${api(`pool="${p.pool}"`)}) > 0` : none,
        // Allowed: a worker's start (its models load before it announces itself), and KEDA's poll.
        minutes(p.startupSeconds + ms.spec.autoscaling.pollingIntervalSeconds + 60),
        `No live worker in the ${p.pool} pool of ${ms.metadata.name}`,
        scaleToZero
          ? `Work waits in the ${p.pool} pool and no worker has announced itself: its models' requests fail with SERVICE_UNAVAILABLE.`
          : `No worker of the ${p.pool} pool has announced itself with its models loaded: its models' requests fail with SERVICE_UNAVAILABLE.`,
        // One rule per pool: the label keeps them apart (promtool rejects duplicates otherwise).
        { pool: p.pool },
      ),
    );
  }
  rules.push(
    alert(
      ms,
      'BatchlineQueueNearlyFull',
      'warning',
      `max ${by('pool')} (batchline_queue_depth${api()})\n  > ${alerts.queueDepthRatio} * max ${by('pool')} (batchline_queue_max_depth${api()})`,
      '5m',
      'The {{ $labels.pool }} queue is over ' + `${Math.round(alerts.queueDepthRatio * 100)}% of queue.maxDepth`,
      'Jobs wait faster than workers take them; at queue.maxDepth new work is refused with QUEUE_FULL. Add workers or find what slows them.',
    ),
    alert(
      ms,
      'BatchlineModelOverSLO',
      'warning',
      `histogram_quantile(0.99, sum ${by('model, le')} (rate(batchline_batch_inference_seconds_bucket${workers()}[5m])))\n  > on (${ms.metadata.namespace ? 'namespace, ' : ''}model) max ${by('model')} (batchline_model_slo_seconds${workers()})`,
      '5m',
      '{{ $labels.model }}: p99 of a batch inference is over its SLO',
      'For 5 minutes the 99th percentile of one batch inference of {{ $labels.model }} has been {{ $value | humanizeDuration }}, over its batching.sloMs.',
    ),
    alert(
      ms,
      'BatchlineErrors',
      'critical',
      `${ratio('batchline_requests_total', api, FAILURE_CODES)}\n  > ${alerts.errorRatio}`,
      '5m',
      `{{ $labels.model }}: over ${alerts.errorRatio * 100}% of requests fail`,
      `{{ $value | humanizePercentage }} of {{ $labels.model }}'s requests end in ${FAILURE_CODES.join(', ')}.`,
    ),
    alert(
      ms,
      'BatchlineJobErrors',
      'warning',
      `${ratio('batchline_worker_jobs_total', workers, FAILURE_CODES)}\n  > ${alerts.errorRatio}`,
      '5m',
      `{{ $labels.model }}: over ${alerts.errorRatio * 100}% of worker jobs fail`,
      `{{ $value | humanizePercentage }} of {{ $labels.model }}'s jobs (synchronous and submitted) fail in the workers with ${FAILURE_CODES.join(', ')}.`,
    ),
    alert(
      ms,
      'BatchlineRefusals',
      'warning',
      `${ratio('batchline_requests_total', api, REFUSAL_CODES)}\n  > ${alerts.refusalRatio}`,
      '5m',
      `{{ $labels.model }}: over ${alerts.refusalRatio * 100}% of requests refused`,
      `{{ $value | humanizePercentage }} of {{ $labels.model }}'s requests are refused with ${REFUSAL_CODES.join(', ')}: not enough capacity.`,
    ),
    alert(
      ms,
      'BatchlineDrift',
      'warning',
      `min ${by('model, version')} (batchline_drift_p_value${api()})\n  < on (${ms.metadata.namespace ? 'namespace, ' : ''}model, version) max ${by('model, version')} (batchline_drift_alpha${api()})`,
      '15m',
      '{{ $labels.model }} version {{ $labels.version }}: predicted classes drift from training',
      "The drift monitor's chi-square test of recent predicted classes against the training distribution has given p = {{ $value }} for 15 minutes, under maintenance.driftAlpha.",
    ),
    alert(
      ms,
      'BatchlineRedisUnreachable',
      'critical',
      `min ${by('job')} (batchline_redis_up${selector(ms, `job=~"${apiJob}|${pools.map((p) => componentName(ms, `worker-${p.pool}`)).join('|')}"`)}) == 0`,
      '1m',
      '{{ $labels.job }} cannot reach Redis',
      'A pod of {{ $labels.job }} has had no Redis connection for a minute: the API answers 503, workers take no jobs.',
    ),
    alert(
      ms,
      'BatchlineStalledJobs',
      'warning',
      `sum ${by('pool')} (increase(batchline_stalled_jobs_total${workers()}[15m])) > 0`,
      undefined,
      'Jobs of the {{ $labels.pool }} pool stalled and were handed to another worker',
      'A worker died or lost its job locks (its event loop blocked, or Redis unreachable) in the last 15 minutes; its jobs ran again elsewhere.',
    ),
  );
  return rules;
}

export function prometheusRule(ms: ModelServer, pools: PoolSizing[]): IPrometheusRule {
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: monitoringMetadata(ms, ms.metadata.name),
    spec: { groups: [{ name: `batchline.${ms.metadata.name}`, rules: alertRules(ms, pools) }] },
  };
}
