/**
 * A development Redis (`spec.redis.deploy: true`): one replica, no persistence, no
 * password, and a Secret in the shape a production one must have. Not for production.
 */
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { ISecret } from 'kubernetes-models/v1/Secret';
import type { IService } from 'kubernetes-models/v1/Service';
import type { ModelServer } from '../resource.ts';
import { componentName, containerSecurityContext, labels, metadata, podSecurityContext, selectorLabels } from './common.ts';

export const REDIS_IMAGE = 'redis:7.4-alpine';
// The redis user of the official image.
const REDIS_UID = 999;

/** Host and port; fully qualified when the namespace is known, since KEDA resolves it from its own namespace. */
function address(ms: ModelServer): string {
  const host = componentName(ms, 'redis');
  return ms.metadata.namespace ? `${host}.${ms.metadata.namespace}.svc:6379` : `${host}:6379`;
}

export function redisSecretManifest(ms: ModelServer): ISecret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: metadata(ms, componentName(ms, 'redis'), 'redis'),
    type: 'Opaque',
    stringData: { url: `redis://${address(ms)}`, address: address(ms) },
  };
}

export function redisService(ms: ModelServer): IService {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(ms, componentName(ms, 'redis'), 'redis'),
    spec: { selector: selectorLabels(ms, 'redis'), ports: [{ name: 'redis', port: 6379, targetPort: 'redis', protocol: 'TCP' }] },
  };
}

export function redisDeployment(ms: ModelServer): IDeployment {
  const ping = { exec: { command: ['redis-cli', 'ping'] }, periodSeconds: 10, timeoutSeconds: 2, failureThreshold: 3 };
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: metadata(ms, componentName(ms, 'redis'), 'redis'),
    spec: {
      replicas: 1,
      // Two Redis pods would be two queues: replace, never overlap.
      strategy: { type: 'Recreate' },
      selector: { matchLabels: selectorLabels(ms, 'redis') },
      template: {
        metadata: { labels: labels(ms, 'redis') },
        spec: {
          automountServiceAccountToken: false,
          securityContext: podSecurityContext(REDIS_UID),
          containers: [
            {
              name: 'redis',
              image: REDIS_IMAGE,
              args: ['--save', '', '--appendonly', 'no'],
              ports: [{ name: 'redis', containerPort: 6379, protocol: 'TCP' }],
              resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '1', memory: '256Mi' } },
              livenessProbe: ping,
              readinessProbe: ping,
              securityContext: containerSecurityContext(),
              volumeMounts: [{ name: 'data', mountPath: '/data' }],
            },
          ],
          volumes: [{ name: 'data', emptyDir: {} }],
        },
      },
    },
  };
}
