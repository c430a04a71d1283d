/**
 * The ModelServer custom resource as TypeScript, after the CRD's defaults are applied
 * (`k8s/crd/modelserver.yaml` is the source of truth; `k8s/schema.ts` applies it).
 */
import type { LOG_LEVELS, PoolName } from '../core/config/settings.ts';
import type { BatchingSpec } from '../core/models/config.ts';

export const API_GROUP = 'batchline.dev';
export const API_VERSION = `${API_GROUP}/v1alpha1`;
export const KIND = 'ModelServer';

/** A Kubernetes quantity: "512Mi", "2", 1.5, "500m". */
export type Quantity = string | number;

export interface Toleration {
  key?: string;
  operator?: 'Exists' | 'Equal';
  value?: string;
  effect?: 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute';
  tolerationSeconds?: number;
}

export interface ModelSpec {
  name: string;
  pool: PoolName;
  memory: Quantity;
  gpuMemory?: Quantity;
  source: { type: 'image' | 'pvc'; claimName?: string; subPath?: string };
  /** Overrides the model's config.yaml `batching` (its `sloMs` comes from `slo.latencyMs`). */
  batching?: Partial<Omit<BatchingSpec, 'sloMs'>>;
  slo?: { latencyMs: number };
}

export interface ResourceList {
  cpu?: Quantity;
  memory?: Quantity;
  'nvidia.com/gpu'?: number;
}

export interface PoolSpec {
  resources: { requests?: ResourceList; limits: ResourceList };
  baseMemory?: Quantity;
  /** Model memory budget of each worker (`workers.modelMemoryBytes`): models load on demand into it. Absent: every model in every slot. */
  modelMemory?: Quantity;
  gpuMemory?: Quantity;
  gpuReserve?: Quantity;
  startupSeconds?: number;
  /** BullMQ queues of the pool (`queue.shards`). @defaultValue 1 */
  queueShards: number;
  autoscaling: {
    minReplicas: number;
    maxReplicas: number;
    targetQueueDepth?: number;
    targetLatencyMs?: number;
    targetCPUUtilization: number;
    /** Peak rate to plan for, and a simulator profile (path relative to the resource file); see k8s/capacity.ts. */
    expectedRate?: { requestsPerSecond: number; profile: string };
  };
  nodeSelector?: Record<string, string>;
  tolerations?: Toleration[];
}

export interface ModelServerSpec {
  image: { repository: string; tag: string; gpuTag?: string; pullPolicy: 'Always' | 'IfNotPresent' | 'Never'; pullSecrets?: string[] };
  models: ModelSpec[];
  pools: Partial<Record<PoolName, PoolSpec>>;
  api: {
    replicas: number;
    resources?: { requests?: ResourceList; limits?: ResourceList };
    autoscaling?: { minReplicas: number; maxReplicas: number; targetCPUUtilization: number };
    service: { type: 'ClusterIP' | 'NodePort' | 'LoadBalancer'; port: number };
    graphiql: boolean;
    introspection: boolean;
  };
  autoscaling: {
    provider: 'keda' | 'hpa' | 'none';
    pollingIntervalSeconds: number;
    cooldownSeconds: number;
    prometheus?: { serverAddress: string };
  };
  redis: {
    secretRef?: { name: string; key: string; addressKey: string; passwordKey?: string };
    prefix: string;
    deploy: boolean;
    /** The Secret's URL is a Redis Cluster's (`redis+cluster://...`, BATCHLINE_REDIS_CLUSTER). @defaultValue false */
    cluster: boolean;
  };
  auth?: { secretRef?: { name: string; key: string } };
  logs: { level: (typeof LOG_LEVELS)[number]; retentionDays: number; toFile: boolean };
  /** OpenTelemetry tracing: pods trace and export OTLP to `endpoint` (k8s/render/pod.ts, tracingEnv). */
  tracing?: {
    endpoint: string;
    /** @defaultValue 'http/protobuf' */
    protocol: 'http/protobuf' | 'http/json' | 'grpc';
    /** @defaultValue 0.01 */
    samplingRatio: number;
  };
  /** Prometheus Operator resources: a ServiceMonitor and a PrometheusRule (k8s/render/monitoring.ts). */
  monitoring: {
    /** Render the ServiceMonitor and PrometheusRule (they need the operator's CRDs). @defaultValue true */
    prometheusOperator: boolean;
    /** Labels for the Prometheus's serviceMonitorSelector and ruleSelector. */
    labels?: Record<string, string>;
    /** Scrape interval. @defaultValue '30s' */
    interval: string;
    /** Each alert's runbook_url is this plus the alert's anchor. @defaultValue 'k8s/README.md' */
    runbookBaseUrl: string;
    alerts: {
      /** @defaultValue 0.8 */
      queueDepthRatio: number;
      /** @defaultValue 0.05 */
      errorRatio: number;
      /** @defaultValue 0.1 */
      refusalRatio: number;
    };
  };
}

export interface ModelServer {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: ModelServerSpec;
}
