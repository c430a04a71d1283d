/**
 * Pod pieces the API and the workers share: volumes (config, models, scratch, logs),
 * environment, probes and resources.
 */
import type { IEnvVar } from 'kubernetes-models/v1/EnvVar';
import type { IProbe } from 'kubernetes-models/v1/Probe';
import type { IResourceRequirements } from 'kubernetes-models/v1/ResourceRequirements';
import type { IVolume } from 'kubernetes-models/v1/Volume';
import type { IVolumeMount } from 'kubernetes-models/v1/VolumeMount';
import { CONFIG_FILE_ENV, envVarOf, type ConfigPath } from '../../core/config/settings.ts';
import type { ModelServer, ResourceList } from '../resource.ts';
import { volumeName } from '../validate.ts';
import { CONFIG_DIR, LOG_DIR, MODELS_DIR, componentName, redisSecret } from './common.ts';
import { CONFIG_FILE, MODEL_OVERRIDES_FILE, type ConfigOverrides } from './config.ts';

export function volumes(ms: ModelServer): IVolume[] {
  const out: IVolume[] = [
    { name: 'config', configMap: { name: componentName(ms, 'config') } },
    // The root filesystem is read-only; onnxruntime and Node may still want scratch space.
    { name: 'tmp', emptyDir: { sizeLimit: '256Mi' } },
  ];
  if (ms.spec.logs.toFile) out.push({ name: 'logs', emptyDir: { sizeLimit: '1Gi' } });
  for (const m of ms.spec.models) {
    if (m.source.type === 'pvc')
      out.push({ name: volumeName(m.name), persistentVolumeClaim: { claimName: m.source.claimName ?? '', readOnly: true } });
  }
  return out;
}

export function volumeMounts(ms: ModelServer): IVolumeMount[] {
  const out: IVolumeMount[] = [
    { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
    { name: 'tmp', mountPath: '/tmp' },
  ];
  if (ms.spec.logs.toFile) out.push({ name: 'logs', mountPath: LOG_DIR });
  for (const m of ms.spec.models) {
    if (m.source.type !== 'pvc') continue;
    // Mounted over the model's folder: the claim (or its subPath) holds `config.yaml` and `<version>/model.onnx`.
    out.push({
      name: volumeName(m.name),
      mountPath: `${MODELS_DIR}/${m.name}`,
      readOnly: true,
      ...(m.source.subPath ? { subPath: m.source.subPath } : {}),
    });
  }
  return out;
}

/**
 * Environment that sets server settings, given in the server's own configuration shape: each
 * variable's name comes from core/config/settings.ts's ENV_VARS, so the renderer cannot spell one the
 * server does not read, and `tsc` checks each value's type. In the order given.
 */
export function settingsEnv(settings: ConfigOverrides): IEnvVar[] {
  return Object.entries(settings).flatMap(([section, values]) =>
    Object.entries(values ?? {}).map(([key, value]) => ({ name: envVarOf(`${section}.${key}` as ConfigPath), value: String(value) })),
  );
}

/** A setting whose value comes from a Secret (named by its config path, as in {@link settingsEnv}). */
export function secretEnv(path: ConfigPath, secretKeyRef: { name: string; key: string }): IEnvVar {
  return { name: envVarOf(path), valueFrom: { secretKeyRef } };
}

/** Environment every batchline container gets: where the config is, and the Redis (or Redis Cluster) URL from its Secret. */
export function baseEnv(ms: ModelServer): IEnvVar[] {
  const redis = redisSecret(ms);
  return [
    { name: CONFIG_FILE_ENV, value: `${CONFIG_DIR}/${CONFIG_FILE}` },
    ...settingsEnv({ models: { overrides: `${CONFIG_DIR}/${MODEL_OVERRIDES_FILE}` } }),
    // A cluster's redis+cluster:// URL sets redis.cluster, which every connection then uses.
    secretEnv(ms.spec.redis.cluster ? 'redis.cluster' : 'redis.url', { name: redis.name, key: redis.key }),
  ];
}

export function httpProbe(path: string, port: string, periodSeconds: number, failureThreshold: number): IProbe {
  return { httpGet: { path, port }, periodSeconds, timeoutSeconds: 2, failureThreshold };
}

function list(r: ResourceList | undefined): Record<string, string> | undefined {
  if (!r) return undefined;
  const out: Record<string, string> = {};
  for (const key of ['cpu', 'memory', 'nvidia.com/gpu'] as const) {
    if (r[key] !== undefined) out[key] = String(r[key]);
  }
  return Object.keys(out).length ? out : undefined;
}

/** Requests default to the limits: sizing assumes the limits are there to use (Guaranteed QoS). */
export function resources(r: { requests?: ResourceList; limits?: ResourceList }): IResourceRequirements {
  const limits = list(r.limits);
  const requests = { ...limits, ...list(r.requests) };
  return { ...(Object.keys(requests).length ? { requests } : {}), ...(limits ? { limits } : {}) };
}
