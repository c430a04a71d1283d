/**
 * Consistency checks the CRD schema cannot express (or expresses only as CEL rules,
 * which need a cluster): each message names the field and the numbers at fault.
 */
import { POOLS } from '../core/config/settings.ts';
import { parseQuantity } from './quantity.ts';
import { API_VERSION, KIND, type ModelServer, type ResourceList } from './resource.ts';

// Names derived from the resource's (`<name>-worker-gpu`) must stay DNS-1035 labels of
// at most 63 characters.
const NAME = /^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$/;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Volume name for a model's PVC mount (model names may hold `.` and `_`). */
export function volumeName(model: string): string {
  return `model-${model.replace(/[._]/g, '-')}`;
}

function quantity(errors: string[], field: string, value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  try {
    const n = parseQuantity(value);
    if (!(n > 0)) errors.push(`${field}: must be positive, got ${value}`);
    return n;
  } catch (e) {
    errors.push(`${field}: ${(e as Error).message}`);
    return undefined;
  }
}

function requestsWithinLimits(errors: string[], field: string, r: { requests?: ResourceList; limits?: ResourceList }): void {
  for (const key of ['cpu', 'memory'] as const) {
    const request = quantity(errors, `${field}.requests.${key}`, r.requests?.[key]);
    const limit = quantity(errors, `${field}.limits.${key}`, r.limits?.[key]);
    if (request !== undefined && limit !== undefined && request > limit) {
      errors.push(`${field}.requests.${key}: ${r.requests?.[key]} exceeds ${field}.limits.${key} ${r.limits?.[key]}`);
    }
  }
  const gpuRequest = r.requests?.['nvidia.com/gpu'];
  const gpuLimit = r.limits?.['nvidia.com/gpu'];
  if (gpuRequest !== undefined && gpuRequest !== gpuLimit) {
    errors.push(
      `${field}.requests.nvidia.com/gpu: ${gpuRequest} must equal ${field}.limits.nvidia.com/gpu ${gpuLimit} (GPUs cannot be overcommitted)`,
    );
  }
}

function checkModels(ms: ModelServer, errors: string[]): void {
  const names = new Map<string, string>();
  ms.spec.models.forEach((m, i) => {
    const at = `spec.models[${i}]`;
    const volume = volumeName(m.name);
    const clash = names.get(volume);
    if (clash !== undefined) errors.push(`${at}.name: '${m.name}' clashes with ${clash}`);
    names.set(volume, `${at}.name '${m.name}'`);
    if (!ms.spec.pools[m.pool]) errors.push(`${at}.pool: '${m.name}' runs in pool ${m.pool}, but spec.pools.${m.pool} is not defined`);
    quantity(errors, `${at}.memory`, m.memory);
    quantity(errors, `${at}.gpuMemory`, m.gpuMemory);
    if (m.source.type === 'pvc' && !m.source.claimName) errors.push(`${at}.source.claimName: required for a pvc source`);
    if (m.source.type === 'image' && (m.source.claimName || m.source.subPath)) {
      errors.push(`${at}.source: claimName and subPath apply only to type pvc, but type is image`);
    }
    if (m.gpuMemory !== undefined && m.pool !== 'gpu') errors.push(`${at}.gpuMemory: set, but '${m.name}' runs in pool ${m.pool}`);
  });
}

function checkPools(ms: ModelServer, errors: string[]): void {
  const provider = ms.spec.autoscaling.provider;
  for (const pool of POOLS) {
    const spec = ms.spec.pools[pool];
    if (!spec) continue;
    const at = `spec.pools.${pool}`;
    if (!ms.spec.models.some((m) => m.pool === pool)) errors.push(`${at}: defined, but no model in spec.models runs in it`);
    requestsWithinLimits(errors, `${at}.resources`, spec.resources);
    quantity(errors, `${at}.baseMemory`, spec.baseMemory);
    quantity(errors, `${at}.modelMemory`, spec.modelMemory);
    quantity(errors, `${at}.gpuMemory`, spec.gpuMemory);
    quantity(errors, `${at}.gpuReserve`, spec.gpuReserve);
    const a = spec.autoscaling;
    if (a.minReplicas > a.maxReplicas) errors.push(`${at}.autoscaling.minReplicas: ${a.minReplicas} exceeds maxReplicas ${a.maxReplicas}`);
    if (a.targetQueueDepth !== undefined && a.targetLatencyMs !== undefined) {
      errors.push(`${at}.autoscaling: set targetQueueDepth (${a.targetQueueDepth}) or targetLatencyMs (${a.targetLatencyMs}), not both`);
    }
    if (provider === 'hpa' && a.minReplicas < 1)
      errors.push(`${at}.autoscaling.minReplicas: 0 needs provider keda (a HorizontalPodAutoscaler cannot scale to zero)`);
    if (provider === 'none') {
      if (a.minReplicas < 1) errors.push(`${at}.autoscaling.minReplicas: must be at least 1 with spec.autoscaling.provider none`);
      if (a.maxReplicas !== a.minReplicas) {
        errors.push(
          `${at}.autoscaling.maxReplicas: ${a.maxReplicas} differs from minReplicas ${a.minReplicas}, but spec.autoscaling.provider is none (fixed replicas)`,
        );
      }
    }
  }
}

/**
 * Checks a schema-valid, defaulted ModelServer for values that contradict each other.
 * Sizing (memory that cannot hold a model) is checked by `k8s/plan.ts`.
 * @returns one message per problem; empty when consistent
 */
export function checkConsistency(ms: ModelServer): string[] {
  const errors: string[] = [];
  if (ms.apiVersion !== API_VERSION) errors.push(`apiVersion: must be ${API_VERSION}, got ${ms.apiVersion}`);
  if (ms.kind !== KIND) errors.push(`kind: must be ${KIND}, got ${ms.kind}`);
  const name = ms.metadata?.name;
  if (typeof name !== 'string' || !NAME.test(name)) {
    errors.push(`metadata.name: '${name ?? ''}' must be a lowercase DNS label of at most 40 characters starting with a letter`);
  }
  const ns = ms.metadata?.namespace;
  if (ns !== undefined && !NAMESPACE.test(ns)) errors.push(`metadata.namespace: '${ns}' is not a DNS label`);
  checkModels(ms, errors);
  checkPools(ms, errors);
  const api = ms.spec.api;
  if (api.resources) requestsWithinLimits(errors, 'spec.api.resources', api.resources);
  if (api.autoscaling && api.autoscaling.minReplicas > api.autoscaling.maxReplicas) {
    errors.push(`spec.api.autoscaling.minReplicas: ${api.autoscaling.minReplicas} exceeds maxReplicas ${api.autoscaling.maxReplicas}`);
  }
  if (ms.spec.autoscaling.prometheus && ms.spec.autoscaling.provider !== 'keda') {
    errors.push(`spec.autoscaling.prometheus: applies only to provider keda, but provider is ${ms.spec.autoscaling.provider}`);
  }
  const redis = ms.spec.redis;
  if (!redis.secretRef && !redis.deploy)
    errors.push('spec.redis: set secretRef (a Secret with the connection) or deploy: true (development Redis)');
  if (redis.secretRef && redis.deploy) errors.push('spec.redis: set secretRef or deploy: true, not both');
  if (redis.cluster && redis.deploy)
    errors.push('spec.redis: cluster: true needs a secretRef to the cluster; deploy: true renders a single development Redis');
  if (redis.deploy && ms.spec.autoscaling.provider === 'keda' && ns === undefined) {
    errors.push(
      'metadata.namespace: required with spec.redis.deploy and provider keda (KEDA reaches the Redis Service from its own namespace)',
    );
  }
  return errors;
}
