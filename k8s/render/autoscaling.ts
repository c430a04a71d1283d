/**
 * Autoscaling. Workers scale on queue depth with KEDA: a `redis` trigger on the pool's
 * BullMQ wait list (`<prefix>:<pool>:wait`; on a Redis Cluster a `redis-cluster` trigger on
 * `<prefix>:{<pool>}:wait`; one per shard of the pool's queue), and, when a Prometheus is named, a
 * `prometheus` trigger on `batchline_queue_depth{pool}`, which the API exports and which
 * also counts prioritized jobs (BullMQ keeps those in the sorted set
 * `<prefix>:<pool>:prioritized`, which the list trigger cannot read). KEDA scales to the
 * larger of the two. Without KEDA, a CPU HorizontalPodAutoscaler is the fallback. The API
 * is I/O-bound and scales on CPU when asked to.
 */
import type { IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import type { IScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';
import type { ITriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication';
import type { PoolSizing } from '../plan.ts';
import type { ModelServer } from '../resource.ts';
import { componentName, metadata, redisSecret, type Component } from './common.ts';
import { keyspace } from '../../core/redis/connection.ts';

/**
 * KEDA reads the Redis address and password from the same Secret as batchline; for a
 * cluster, its redis-cluster scaler takes `addresses` (host:port,host:port) instead.
 */
export function triggerAuthentication(ms: ModelServer): ITriggerAuthentication {
  const secret = redisSecret(ms);
  const refs = [{ parameter: ms.spec.redis.cluster ? 'addresses' : 'address', name: secret.name, key: secret.addressKey }];
  if (secret.passwordKey) refs.push({ parameter: 'password', name: secret.name, key: secret.passwordKey });
  return {
    apiVersion: 'keda.sh/v1alpha1',
    kind: 'TriggerAuthentication',
    metadata: metadata(ms, componentName(ms, 'redis'), 'redis'),
    spec: { secretTargetRef: refs },
  };
}

/** The Prometheus query for a pool's depth; `max`, not `sum`: every API replica reports the same queue. */
export function queueDepthQuery(ms: ModelServer, pool: string): string {
  const ns = ms.metadata.namespace ? `,namespace="${ms.metadata.namespace}"` : '';
  return `max(batchline_queue_depth{pool="${pool}"${ns}})`;
}

export function scaledObject(ms: ModelServer, p: PoolSizing): IScaledObject {
  const component: Component = `worker-${p.pool}`;
  const { autoscaling } = ms.spec;
  const target = String(p.targetQueueDepth);
  const { prefix, cluster } = ms.spec.redis;
  const shards = p.spec.queueShards ?? 1;
  // One list trigger per shard, named as the server names its queues (core/redis/connection.ts: hash-tagged
  // on a cluster). KEDA scales to the largest; jobs spread evenly, so each shard's target is
  // its share of the pool's.
  const keys = keyspace(prefix, cluster);
  const triggers: IScaledObject['spec']['triggers'] = Array.from({ length: shards }, (_, shard) => ({
    type: cluster ? 'redis-cluster' : 'redis',
    name: shard === 0 ? 'wait-list' : `wait-list-${shard}`,
    metadata: {
      listName: `${prefix}:${keys.queueName(p.pool, shard, shards)}:wait`,
      listLength: shards === 1 ? target : String(Math.max(1, Math.ceil(p.targetQueueDepth / shards))),
    },
    authenticationRef: { name: componentName(ms, 'redis') },
  }));
  if (autoscaling.prometheus) {
    triggers.push({
      type: 'prometheus',
      name: 'queue-depth',
      metadata: { serverAddress: autoscaling.prometheus.serverAddress, query: queueDepthQuery(ms, p.pool), threshold: target },
    });
  }
  return {
    apiVersion: 'keda.sh/v1alpha1',
    kind: 'ScaledObject',
    metadata: metadata(ms, componentName(ms, component), component),
    spec: {
      scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: componentName(ms, component) },
      minReplicaCount: p.spec.autoscaling.minReplicas,
      maxReplicaCount: p.spec.autoscaling.maxReplicas,
      pollingInterval: autoscaling.pollingIntervalSeconds,
      cooldownPeriod: autoscaling.cooldownSeconds,
      advanced: {
        horizontalPodAutoscalerConfig: {
          // A worker that just loaded its models is expensive to lose: scale in slowly.
          behavior: {
            scaleDown: {
              stabilizationWindowSeconds: autoscaling.cooldownSeconds,
              policies: [{ type: 'Pods', value: 1, periodSeconds: 60 }],
            },
          },
        },
      },
      triggers,
    },
  };
}

export function cpuAutoscaler(
  ms: ModelServer,
  component: Component,
  min: number,
  max: number,
  utilization: number,
): IHorizontalPodAutoscaler {
  return {
    apiVersion: 'autoscaling/v2',
    kind: 'HorizontalPodAutoscaler',
    metadata: metadata(ms, componentName(ms, component), component),
    spec: {
      scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: componentName(ms, component) },
      minReplicas: min,
      maxReplicas: max,
      metrics: [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: utilization } } }],
    },
  };
}
