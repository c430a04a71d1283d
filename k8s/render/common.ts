/**
 * Names, labels and the pieces every rendered pod shares. Manifests are typed with
 * kubernetes-models' interfaces (type-only imports: nothing of it loads at run time), so
 * `tsc` rejects a misspelt field and the tests validate the values against the schemas.
 */
import type { IObjectMeta } from '@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { ISecret } from 'kubernetes-models/v1/Secret';
import type { IService } from 'kubernetes-models/v1/Service';
import type { IPodSecurityContext } from 'kubernetes-models/v1/PodSecurityContext';
import type { ISecurityContext } from 'kubernetes-models/v1/SecurityContext';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import type { IScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';
import type { ITriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication';
import type { IServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import type { IPrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import type { ModelServer } from '../resource.ts';

export type Manifest =
  | IConfigMap
  | ISecret
  | IService
  | IDeployment
  | IPodDisruptionBudget
  | IHorizontalPodAutoscaler
  | IScaledObject
  | ITriggerAuthentication
  | IServiceMonitor
  | IPrometheusRule;

export type Component = 'api' | 'worker-cpu' | 'worker-gpu' | 'redis' | 'config' | 'monitoring';

/** Where the server reads its configuration (`BATCHLINE_CONFIG`). */
export const CONFIG_DIR = '/etc/batchline';
export const MODELS_DIR = '/app/models';
export const LOG_DIR = '/var/log/batchline';
export const API_PORT = 4000;
/** The inference protocol's gRPC door (`grpc.port`'s default; its REST door is on API_PORT). */
export const GRPC_PORT = 4001;
export const WORKER_HTTP_PORT = 9464;
/** The image's non-root user (see Dockerfile). */
export const APP_UID = 10001;

/** Annotation keys carrying the sizing on worker Deployments. */
export const ANNOTATION = 'batchline.dev';

export function componentName(ms: ModelServer, component: Component): string {
  return `${ms.metadata.name}-${component}`;
}

/** The labels a component's selector matches (never change: selectors are immutable). */
export function selectorLabels(ms: ModelServer, component: Component): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'batchline',
    'app.kubernetes.io/instance': ms.metadata.name,
    'app.kubernetes.io/component': component,
  };
}

export function labels(ms: ModelServer, component: Component): Record<string, string> {
  return {
    ...selectorLabels(ms, component),
    'app.kubernetes.io/version': ms.spec.image.tag,
    'app.kubernetes.io/part-of': 'batchline',
    'app.kubernetes.io/managed-by': 'batchline-k8s-render',
  };
}

export function metadata(ms: ModelServer, name: string, component: Component, annotations?: Record<string, string>): IObjectMeta {
  return {
    name,
    ...(ms.metadata.namespace ? { namespace: ms.metadata.namespace } : {}),
    labels: labels(ms, component),
    ...(annotations ? { annotations } : {}),
  };
}

export function podSecurityContext(uid = APP_UID): IPodSecurityContext {
  return { runAsNonRoot: true, runAsUser: uid, runAsGroup: uid, fsGroup: uid, seccompProfile: { type: 'RuntimeDefault' } };
}

export function containerSecurityContext(): ISecurityContext {
  return { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } };
}

/** The Secret and key holding the Redis connection, whether given or rendered for development. */
export function redisSecret(ms: ModelServer): { name: string; key: string; addressKey: string; passwordKey?: string } {
  return ms.spec.redis.secretRef ?? { name: componentName(ms, 'redis'), key: 'url', addressKey: 'address' };
}
