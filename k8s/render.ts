/**
 * Renders a loaded ModelServer into Kubernetes manifests. Deterministic: the same
 * resource gives the same bytes (no timestamps, fixed order, insertion-ordered keys).
 */
import { stringify } from 'yaml';
import type { LoadedServer } from './load.ts';
import type { Manifest } from './render/common.ts';
import { cpuAutoscaler, scaledObject, triggerAuthentication } from './render/autoscaling.ts';
import { configHash, configMap } from './render/config.ts';
import { apiDeployment, workerDeployment } from './render/deployments.ts';
import { redisDeployment, redisSecretManifest, redisService } from './render/redis.ts';
import { apiService, disruptionBudget, workerService } from './render/services.ts';
import { prometheusRule, serviceMonitor } from './render/monitoring.ts';

export type { Manifest } from './render/common.ts';

/**
 * The manifests, in apply order: configuration and secrets, Services, Deployments,
 * disruption budgets, autoscaling, monitoring (Prometheus Operator).
 */
export function renderManifests({ server: ms, pools }: LoadedServer): Manifest[] {
  const cm = configMap(ms);
  const hash = configHash(cm);
  const out: Manifest[] = [cm];
  if (ms.spec.redis.deploy) out.push(redisSecretManifest(ms), redisService(ms));
  out.push(apiService(ms), ...pools.map((p) => workerService(ms, p)));
  if (ms.spec.redis.deploy) out.push(redisDeployment(ms));
  out.push(apiDeployment(ms, hash), ...pools.map((p) => workerDeployment(ms, p, hash)));
  out.push(disruptionBudget(ms, 'api'), ...pools.map((p) => disruptionBudget(ms, `worker-${p.pool}`)));
  const api = ms.spec.api.autoscaling;
  if (api) out.push(cpuAutoscaler(ms, 'api', api.minReplicas, api.maxReplicas, api.targetCPUUtilization));
  const provider = ms.spec.autoscaling.provider;
  if (provider === 'keda') out.push(triggerAuthentication(ms), ...pools.map((p) => scaledObject(ms, p)));
  if (provider === 'hpa') {
    for (const p of pools)
      out.push(
        cpuAutoscaler(
          ms,
          `worker-${p.pool}`,
          p.spec.autoscaling.minReplicas,
          p.spec.autoscaling.maxReplicas,
          p.spec.autoscaling.targetCPUUtilization,
        ),
      );
  }
  if (ms.spec.monitoring.prometheusOperator) out.push(serviceMonitor(ms, pools), prometheusRule(ms, pools));
  return out;
}

/** One manifest as a YAML document (no `---`). */
export function manifestYaml(m: Manifest): string {
  return stringify(m, { lineWidth: 0 });
}

/** All manifests as one multi-document YAML stream. */
export function toYaml(manifests: Manifest[]): string {
  return manifests
    .map(manifestYaml)
    .map((doc) => `---\n${doc}`)
    .join('');
}

/** A file name for a manifest in `render --out`: order, kind and name, e.g. `04-deployment-demo-api.yaml`. */
export function manifestFileName(m: Manifest, index: number): string {
  return `${String(index + 1).padStart(2, '0')}-${m.kind.toLowerCase()}-${m.metadata?.name ?? 'unnamed'}.yaml`;
}
