/**
 * Deployments for the API and for each worker pool. Workers carry their sizing twice:
 * as the `workers.*` settings the worker obeys (set by environment, `BATCHLINE_WORKER_*`),
 * and as annotations that say how it was decided (the same lines as `batchline k8s explain`).
 */
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IDeploymentStrategy } from 'kubernetes-models/apps/v1/DeploymentStrategy';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import { DEFAULT_CONFIG } from '../../core/config/settings.ts';
import { mib } from '../../core/worker/sizing.ts';
import type { PoolSizing } from '../plan.ts';
import type { ModelServer } from '../resource.ts';
import {
  ANNOTATION,
  API_PORT,
  GRPC_PORT,
  WORKER_HTTP_PORT,
  componentName,
  containerSecurityContext,
  metadata,
  podSecurityContext,
  selectorLabels,
  labels,
  type Component,
} from './common.ts';
import { baseEnv, httpProbe, resources, secretEnv, settingsEnv, tracingEnv, volumeMounts, volumes } from './pod.ts';

const API_RESOURCES = { requests: { cpu: '250m', memory: '256Mi' }, limits: { cpu: '1', memory: '512Mi' } };
// Room for in-flight work to finish (workers.shutdownTimeoutMs) before SIGKILL.
const GRACE_SECONDS = Math.ceil(DEFAULT_CONFIG.workers.shutdownTimeoutMs / 1000) + 10;

function image(ms: ModelServer, gpu: boolean): string {
  const { repository, tag, gpuTag } = ms.spec.image;
  return `${repository}:${gpu ? (gpuTag ?? `${tag}-gpu`) : tag}`;
}

function podSpec(ms: ModelServer, component: Component, container: IContainer, extra: Partial<IPodSpec>): IPodSpec {
  return {
    automountServiceAccountToken: false,
    securityContext: podSecurityContext(),
    terminationGracePeriodSeconds: GRACE_SECONDS,
    ...(ms.spec.image.pullSecrets?.length ? { imagePullSecrets: ms.spec.image.pullSecrets.map((name) => ({ name })) } : {}),
    // Spread replicas over nodes where possible, so one node's loss is not the whole pool's.
    topologySpreadConstraints: [
      {
        maxSkew: 1,
        topologyKey: 'kubernetes.io/hostname',
        whenUnsatisfiable: 'ScheduleAnyway',
        labelSelector: { matchLabels: selectorLabels(ms, component) },
      },
    ],
    ...extra,
    containers: [container],
    volumes: volumes(ms),
  };
}

function deployment(
  ms: ModelServer,
  component: Component,
  replicas: number | undefined,
  annotations: Record<string, string> | undefined,
  podAnnotations: Record<string, string>,
  spec: IPodSpec,
  strategy?: IDeploymentStrategy,
): IDeployment {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: metadata(ms, componentName(ms, component), component, annotations),
    spec: {
      // Left out when an autoscaler owns the count, so re-applying does not reset it.
      ...(replicas !== undefined ? { replicas } : {}),
      revisionHistoryLimit: 5,
      selector: { matchLabels: selectorLabels(ms, component) },
      ...(strategy ? { strategy } : {}),
      template: { metadata: { labels: labels(ms, component), annotations: podAnnotations }, spec },
    },
  };
}

function scrape(port: number): Record<string, string> {
  return { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(port), 'prometheus.io/path': '/metrics' };
}

/** The API Deployment (`serve`): GraphQL and the inference protocol's REST on 4000, its gRPC on 4001, `/health` for liveness, `/ready` for readiness. */
export function apiDeployment(ms: ModelServer, configHash: string): IDeployment {
  const api = ms.spec.api;
  const env = [...baseEnv(ms), ...tracingEnv(ms, 'api')];
  if (ms.spec.auth?.secretRef) {
    // Keys given means keys required: the server's default (off) is for local use only.
    env.push(...settingsEnv({ auth: { enabled: true } }));
    env.push(secretEnv('auth.keys', { name: ms.spec.auth.secretRef.name, key: ms.spec.auth.secretRef.key }));
  }
  const container: IContainer = {
    name: 'api',
    image: image(ms, false),
    imagePullPolicy: ms.spec.image.pullPolicy,
    args: ['serve'],
    ports: [
      { name: 'http', containerPort: API_PORT, protocol: 'TCP' },
      { name: 'grpc', containerPort: GRPC_PORT, protocol: 'TCP' },
    ],
    env,
    resources: resources(api.resources ?? API_RESOURCES),
    startupProbe: httpProbe('/health', 'http', 2, 30),
    livenessProbe: httpProbe('/health', 'http', 10, 3),
    readinessProbe: httpProbe('/ready', 'http', 5, 2),
    securityContext: containerSecurityContext(),
    volumeMounts: volumeMounts(ms),
  };
  const replicas = api.autoscaling ? undefined : api.replicas;
  return deployment(
    ms,
    'api',
    replicas,
    undefined,
    { [`${ANNOTATION}/config-hash`]: configHash, ...scrape(API_PORT) },
    podSpec(ms, 'api', container, {}),
  );
}

/** The sizing annotations of a worker Deployment. */
export function sizingAnnotations(p: PoolSizing): Record<string, string> {
  const { plan, limits } = p;
  const gpu =
    p.pool === 'gpu'
      ? ` gpus=${limits.gpus} gpu-memory=${limits.gpuMemoryBytes !== undefined ? mib(limits.gpuMemoryBytes) : 'unknown'}`
      : '';
  return {
    [`${ANNOTATION}/slots`]: String(plan.slots),
    [`${ANNOTATION}/intra-op-threads`]: String(plan.intraOpThreads),
    [`${ANNOTATION}/concurrency`]: String(plan.concurrency),
    [`${ANNOTATION}/decided-by`]: plan.decidedBy,
    [`${ANNOTATION}/limits`]: `cpu=${limits.cpuCores} memory=${mib(limits.memoryBytes)}${gpu}`,
    [`${ANNOTATION}/bounds`]: `memory=${plan.bounds.memory ?? 'none'} cpu=${plan.bounds.cpu}${p.pool === 'gpu' ? ` gpu-memory=${plan.bounds.gpuMemory ?? 'none'}` : ''} io-rule=${plan.bounds.ioRule}`,
    [`${ANNOTATION}/target-queue-depth`]: String(p.targetQueueDepth),
    ...(p.plan.modelMemoryBytes !== undefined
      ? {
          [`${ANNOTATION}/model-memory`]: `${mib(p.plan.modelMemoryBytes)}${p.spec.modelMemory !== undefined ? ` (spec modelMemory; ${p.plan.modelsResident} of ${p.models.length} models resident at once)` : ' (what the limit leaves: every model fits)'}`,
        }
      : {}),
    [`${ANNOTATION}/sizing`]: plan.explanation.join('; '),
  };
}

/** A worker pool's Deployment (`worker --pool <pool>`), sized by {@link PoolSizing}. */
export function workerDeployment(ms: ModelServer, p: PoolSizing, configHash: string): IDeployment {
  const gpu = p.pool === 'gpu';
  const component: Component = `worker-${p.pool}`;
  const env = [
    ...baseEnv(ms),
    ...settingsEnv({
      workers: {
        concurrency: p.plan.concurrency,
        threads: p.plan.slots,
        intraOpThreads: p.plan.intraOpThreads,
        // Fail loudly on a GPU node without CUDA rather than fall back to the CPU quietly.
        executionProvider: gpu ? 'cuda' : 'cpu',
        httpPort: WORKER_HTTP_PORT,
        // The budget the plan sized for: spec modelMemory, else what the limit leaves for models
        // (all of them fit), never the worker's own derivation from its limit.
        ...(p.plan.modelMemoryBytes !== undefined ? { modelMemoryBytes: p.plan.modelMemoryBytes } : {}),
      },
    }),
    ...tracingEnv(ms, component),
  ];
  const container: IContainer = {
    name: 'worker',
    image: image(ms, gpu),
    imagePullPolicy: ms.spec.image.pullPolicy,
    args: ['worker', '--pool', p.pool],
    ports: [{ name: 'metrics', containerPort: WORKER_HTTP_PORT, protocol: 'TCP' }],
    env,
    resources: resources(p.spec.resources),
    // Startup waits for /ready (models loaded), so liveness never judges a worker still loading.
    startupProbe: httpProbe('/ready', 'metrics', 5, Math.ceil(p.startupSeconds / 5)),
    livenessProbe: httpProbe('/health', 'metrics', 10, 3),
    readinessProbe: httpProbe('/ready', 'metrics', 5, 2),
    securityContext: containerSecurityContext(),
    volumeMounts: volumeMounts(ms),
  };
  const extra: Partial<IPodSpec> = {};
  const nodeSelector = p.spec.nodeSelector ?? (gpu ? { 'nvidia.com/gpu.present': 'true' } : undefined);
  const tolerations = p.spec.tolerations ?? (gpu ? [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }] : undefined);
  if (nodeSelector) extra.nodeSelector = nodeSelector;
  if (tolerations) extra.tolerations = tolerations;
  const replicas = ms.spec.autoscaling.provider === 'none' ? p.spec.autoscaling.minReplicas : undefined;
  // GPUs are rarely spare: replace GPU workers one at a time instead of surging.
  const strategy: IDeploymentStrategy | undefined = gpu
    ? { type: 'RollingUpdate', rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } }
    : undefined;
  return deployment(
    ms,
    component,
    replicas,
    sizingAnnotations(p),
    { [`${ANNOTATION}/config-hash`]: configHash, ...scrape(WORKER_HTTP_PORT) },
    podSpec(ms, component, container, extra),
    strategy,
  );
}
