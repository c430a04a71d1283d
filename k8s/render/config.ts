/**
 * The ConfigMap: `batchline.yaml` in the server's own configuration shape
 * (`core/config/settings.ts`), and `models.yaml` with the resource's per-model pool, batching and
 * SLO, which override each model's config.yaml (`BATCHLINE_MODEL_OVERRIDES`).
 * Secrets never go here: the Redis URL and API keys reach the pods as environment
 * variables, which win over the file.
 */
import { createHash } from 'node:crypto';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { stringify } from 'yaml';
import type { BatchlineConfig, PoolName } from '../../core/config/settings.ts';
import type { BatchingSpec } from '../../core/models/config.ts';
import type { ModelServer } from '../resource.ts';
import { LOG_DIR, MODELS_DIR, componentName, metadata } from './common.ts';

export const CONFIG_FILE = 'batchline.yaml';
export const MODEL_OVERRIDES_FILE = 'models.yaml';

/** A subset of the server configuration, in its shape; loadConfig fills in the rest. */
export type ConfigOverrides = { [S in keyof BatchlineConfig]?: Partial<BatchlineConfig[S]> };

/**
 * The settings a ModelServer decides. The rest are left to the server's defaults, so an
 * image upgrade brings its own defaults instead of ones frozen at render time. Pool
 * sizing is set per Deployment by environment.
 */
export function serverConfig(ms: ModelServer): ConfigOverrides {
  const { api, logs, redis, pools } = ms.spec;
  const shards = { cpu: pools.cpu?.queueShards ?? 1, gpu: pools.gpu?.queueShards ?? 1 };
  return {
    redis: { prefix: redis.prefix },
    // API and workers read one ConfigMap, so they agree on the shards; said only when not the default.
    ...(shards.cpu > 1 || shards.gpu > 1 ? { queue: { shards } } : {}),
    http: { graphiql: api.graphiql, introspection: api.introspection },
    models: { repository: MODELS_DIR },
    log: { level: logs.level, file: logs.toFile ? `${LOG_DIR}/batchline.log` : '', retentionDays: logs.retentionDays },
  };
}

/** A model's settings that the resource decides, overriding its config.yaml. */
export interface ModelOverride {
  pool: PoolName;
  batching?: Partial<BatchingSpec>;
}

/**
 * Per-model overrides of config.yaml, keyed by model name: the pool always (the
 * resource sized that pool for it), `batching` where the resource sets it.
 */
export function modelOverrides(ms: ModelServer): Record<string, ModelOverride> {
  const out: Record<string, ModelOverride> = {};
  for (const m of ms.spec.models) {
    const batching: Partial<BatchingSpec> = { ...m.batching };
    if (m.slo) batching.sloMs = m.slo.latencyMs;
    out[m.name] = { pool: m.pool, ...(Object.keys(batching).length ? { batching } : {}) };
  }
  return out;
}

const HEADER = `# batchline server configuration (core/config/settings.ts), rendered from a ModelServer by
# 'batchline k8s render': the settings it decides; everything else keeps its default.
# redis.url comes from BATCHLINE_REDIS_URL (a Secret) and API keys from BATCHLINE_API_KEYS;
# environment variables win over this file. Worker sizing is set per pool by env too.
`;

export function configMap(ms: ModelServer): IConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: metadata(ms, componentName(ms, 'config'), 'config'),
    data: {
      [CONFIG_FILE]: HEADER + stringify(serverConfig(ms), { lineWidth: 0 }),
      [MODEL_OVERRIDES_FILE]: stringify(modelOverrides(ms), { lineWidth: 0 }),
    },
  };
}

/** A short digest of the ConfigMap's data; in the pod templates, so pods roll when it changes. */
export function configHash(cm: IConfigMap): string {
  return createHash('sha256').update(JSON.stringify(cm.data)).digest('hex').slice(0, 16);
}
