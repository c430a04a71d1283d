/**
 * Services (the API's, and a headless one per worker pool for metrics scraping) and
 * PodDisruptionBudgets.
 */
import type { IService } from 'kubernetes-models/v1/Service';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { PoolSizing } from '../plan.ts';
import type { ModelServer } from '../resource.ts';
import { GRPC_PORT, WORKER_HTTP_PORT, componentName, metadata, selectorLabels, type Component } from './common.ts';

export function apiService(ms: ModelServer): IService {
  const { type, port } = ms.spec.api.service;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(ms, componentName(ms, 'api'), 'api'),
    spec: {
      type,
      selector: selectorLabels(ms, 'api'),
      ports: [
        { name: 'http', port, targetPort: 'http', protocol: 'TCP' },
        // The Open Inference Protocol over gRPC (its REST half is on the http port, under /v2).
        { name: 'grpc', port: GRPC_PORT, targetPort: 'grpc', protocol: 'TCP' },
      ],
    },
  };
}

/** Headless: workers take no traffic; this only names their pods for a ServiceMonitor or scrape config. */
export function workerService(ms: ModelServer, p: PoolSizing): IService {
  const component: Component = `worker-${p.pool}`;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(ms, componentName(ms, component), component),
    spec: {
      clusterIP: 'None',
      selector: selectorLabels(ms, component),
      ports: [{ name: 'metrics', port: WORKER_HTTP_PORT, targetPort: 'metrics', protocol: 'TCP' }],
    },
  };
}

/**
 * `maxUnavailable: 1` rather than a `minAvailable`: a drain always makes progress, even
 * for a pool of one replica, while a voluntary disruption never takes two at once.
 */
export function disruptionBudget(ms: ModelServer, component: Component): IPodDisruptionBudget {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: metadata(ms, componentName(ms, component), component),
    spec: { maxUnavailable: 1, selector: { matchLabels: selectorLabels(ms, component) } },
  };
}
