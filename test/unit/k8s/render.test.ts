import { describe, it, expect } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../../core/config/settings.ts';
import { explain } from '../../../k8s/explain.ts';
import { keyspace } from '../../../core/redis/connection.ts';
import { GOLDEN_DIR, documents, exampleDoc, exampleText, load, renderYaml, set, validateManifest, type Obj } from './manifests.ts';

const EXAMPLES = ['laptop', 'cpu-only', 'gpu'];
const update = process.env.UPDATE_GOLDEN === '1';

/** Compares with the golden file, or rewrites it when UPDATE_GOLDEN=1. */
function golden(name: string, actual: string): void {
  const path = join(GOLDEN_DIR, name);
  if (update) writeFileSync(path, actual);
  expect(existsSync(path), `${name} has no golden file; UPDATE_GOLDEN=1 writes it`).toBe(true);
  expect(actual, `${name} differs from its golden file; UPDATE_GOLDEN=1 rewrites it`).toBe(readFileSync(path, 'utf8'));
}

type Container = {
  name: string;
  env: { name: string; value?: string }[];
  resources: { limits: Record<string, string> };
  image: string;
  securityContext: Record<string, unknown>;
};
type PodSpec = {
  containers: Container[];
  nodeSelector?: Record<string, string>;
  tolerations?: unknown[];
  volumes: { name: string; persistentVolumeClaim?: { claimName: string } }[];
  securityContext: Record<string, unknown>;
};
const pod = (d: Obj) => (d.spec as { template: { spec: PodSpec } }).template.spec;
const byKind = (docs: Obj[], kind: string, name: string) => docs.find((d) => d.kind === kind && d.metadata.name === name) as Obj;
const env = (d: Obj) => Object.fromEntries(pod(d).containers[0].env.map((e) => [e.name, e.value]));

// Variants beyond the examples, so every branch of the renderer meets the schemas.
const variants: Record<string, (doc: ReturnType<typeof exampleDoc>) => void> = {
  hpa: (d) => {
    d.spec.autoscaling = { provider: 'hpa' };
  },
  pvcAndLogFiles: (d) => {
    (d.spec.models as Record<string, unknown>[])[0].source = { type: 'pvc', claimName: 'models', subPath: 'name-gender' };
    d.spec.logs = { toFile: true, retentionDays: 3 };
  },
  redisCluster: (d) => {
    set(d, 'spec.redis.cluster', true);
    set(d, 'spec.pools.gpu.queueShards', 3);
  },
  noNamespaceAndPullSecrets: (d) => {
    delete (d.metadata as Record<string, unknown>).namespace;
    d.spec.image = { repository: 'registry.example/batchline', tag: '1.2.3', gpuTag: '1.2.3-cuda', pullSecrets: ['regcred'] };
  },
};

describe('k8s render', () => {
  it.each(EXAMPLES)('%s matches its golden manifests and explanation', (name) => {
    golden(`${name}.yaml`, renderYaml(exampleText(`${name}.yaml`)));
    golden(`${name}.explain.txt`, explain(load(exampleText(`${name}.yaml`))));
  });

  it.each(EXAMPLES)('%s: every manifest validates against the Kubernetes and KEDA schemas', (name) => {
    const docs = documents(renderYaml(exampleText(`${name}.yaml`)));
    expect(docs.length).toBeGreaterThan(5);
    for (const d of docs) expect(() => validateManifest(d), `${d.kind} ${d.metadata.name}`).not.toThrow();
  });

  it.each(Object.keys(variants))('variant %s validates too', (variant) => {
    const doc = exampleDoc('gpu.yaml');
    variants[variant](doc);
    for (const d of documents(renderYaml(doc))) expect(() => validateManifest(d), `${d.kind} ${d.metadata.name}`).not.toThrow();
  });

  it('the schemas do catch a broken manifest', () => {
    const deployment = documents(renderYaml(exampleText('gpu.yaml'))).find((d) => d.kind === 'Deployment') as Obj;
    pod(deployment).containers[0].image = 42 as unknown as string;
    expect(() => validateManifest(deployment)).toThrow(/image must be string/);
  });

  it('is deterministic: same input, same bytes', () => {
    for (const name of EXAMPLES) expect(renderYaml(exampleText(`${name}.yaml`))).toBe(renderYaml(exampleText(`${name}.yaml`)));
  });

  it('writes a batchline.yaml the server loads, with env winning', () => {
    const cm = documents(renderYaml(exampleText('cpu-only.yaml'))).find((d) => d.kind === 'ConfigMap') as Obj & {
      data: Record<string, string>;
    };
    const dir = mkdtempSync(join(tmpdir(), 'batchline-k8s-'));
    writeFileSync(join(dir, 'batchline.yaml'), cm.data['batchline.yaml']);
    const config = loadConfig({
      file: join(dir, 'batchline.yaml'),
      env: { BATCHLINE_REDIS_URL: 'redis://r:6379', BATCHLINE_WORKER_THREADS: '4' },
    });
    expect(config.redis).toEqual({ url: 'redis://r:6379', prefix: 'batchline', cluster: '' });
    expect(config.models.repository).toBe('/app/models');
    expect(config.log).toEqual({ level: 'info', file: '', retentionDays: 14, requests: 'all', format: 'auto' });
    expect(config.workers.threads).toBe(4);
    expect(config.http.graphiql).toBe(false);
  });

  it('sizes workers by env, says so in annotations, and matches explain', () => {
    const docs = documents(renderYaml(exampleText('gpu.yaml')));
    const gpu = byKind(docs, 'Deployment', 'batchline-worker-gpu');
    expect(env(gpu)).toMatchObject({
      BATCHLINE_WORKER_THREADS: '4',
      BATCHLINE_INTRA_OP_THREADS: '1',
      BATCHLINE_WORKER_CONCURRENCY: '256',
      BATCHLINE_EXECUTION_PROVIDER: 'cuda',
      BATCHLINE_WORKER_HTTP_PORT: '9464',
    });
    expect(gpu.metadata.annotations).toMatchObject({
      'batchline.dev/slots': '4',
      'batchline.dev/intra-op-threads': '1',
      'batchline.dev/decided-by': 'cpu',
      'batchline.dev/target-queue-depth': '1024',
    });
    const text = explain(load(exampleText('gpu.yaml')));
    expect(text).toContain('4 slots x 1 intra-op thread, concurrency 256');
    const cpu = byKind(docs, 'Deployment', 'batchline-worker-cpu');
    expect(env(cpu)).toMatchObject({ BATCHLINE_WORKER_THREADS: '2', BATCHLINE_EXECUTION_PROVIDER: 'cpu' });
  });

  it('puts GPU workers on GPU nodes with a GPU each, replaced without surging', () => {
    const gpu = byKind(documents(renderYaml(exampleText('gpu.yaml'))), 'Deployment', 'batchline-worker-gpu');
    const spec = pod(gpu);
    expect(spec.containers[0].resources.limits).toEqual({ cpu: '4', memory: '4Gi', 'nvidia.com/gpu': '1' });
    expect(spec.containers[0].image).toBe('ghcr.io/example/batchline:0.1.0-gpu');
    expect(spec.nodeSelector).toEqual({ 'cloud.google.com/gke-accelerator': 'nvidia-tesla-t4' });
    expect(spec.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    expect((gpu.spec as { strategy: unknown }).strategy).toEqual({
      type: 'RollingUpdate',
      rollingUpdate: { maxSurge: 0, maxUnavailable: 1 },
    });
  });

  it('runs every pod as non-root with a read-only root filesystem', () => {
    for (const name of EXAMPLES) {
      for (const d of documents(renderYaml(exampleText(`${name}.yaml`))).filter((x) => x.kind === 'Deployment')) {
        expect(pod(d).securityContext).toMatchObject({ runAsNonRoot: true });
        expect(pod(d).containers[0].securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
      }
    }
  });

  it('scales workers with KEDA on the wait list and, with Prometheus, on batchline_queue_depth', () => {
    const docs = documents(renderYaml(exampleText('cpu-only.yaml')));
    const so = byKind(docs, 'ScaledObject', 'batchline-worker-cpu') as Obj & {
      spec: { triggers: { type: string; metadata: Record<string, string> }[] };
    };
    expect(so.spec.triggers.map((t) => t.type)).toEqual(['redis', 'prometheus']);
    expect(so.spec.triggers[0].metadata).toEqual({ listName: 'batchline:cpu:wait', listLength: '16' });
    expect(so.spec.triggers[1].metadata.query).toBe('max(batchline_queue_depth{pool="cpu",namespace="ml-serving"})');
    expect(byKind(docs, 'Deployment', 'batchline-worker-cpu').spec).not.toHaveProperty('replicas');
  });

  it('points every pod at a Redis Cluster from the same Secret, and scales on each shard with KEDA’s redis-cluster scaler', () => {
    const doc = exampleDoc('cpu-only.yaml');
    set(doc, 'spec.redis.cluster', true);
    set(doc, 'spec.pools.cpu.queueShards', 3);
    const docs = documents(renderYaml(doc));
    for (const name of ['batchline-api', 'batchline-worker-cpu']) {
      const vars = pod(byKind(docs, 'Deployment', name)).containers[0].env as unknown as { name: string; valueFrom?: unknown }[];
      expect(vars.find((e) => e.name === 'BATCHLINE_REDIS_CLUSTER')?.valueFrom).toEqual({
        secretKeyRef: { name: 'batchline-redis', key: 'url' },
      });
      expect(vars.map((e) => e.name)).not.toContain('BATCHLINE_REDIS_URL');
    }
    const so = byKind(docs, 'ScaledObject', 'batchline-worker-cpu') as Obj & {
      spec: { triggers: { type: string; name: string; metadata: Record<string, string> }[] };
    };
    const lists = so.spec.triggers.filter((t) => t.type === 'redis-cluster');
    // The names the server gives its shards on a cluster, each with its share of the target (16).
    expect(lists.map((t) => t.metadata)).toEqual(
      [0, 1, 2].map((shard) => ({ listName: `batchline:${keyspace('batchline', true).queueName('cpu', shard, 3)}:wait`, listLength: '6' })),
    );
    expect(lists[0].metadata.listName).toBe('batchline:{cpu}:wait');
    expect(so.spec.triggers.some((t) => t.type === 'redis')).toBe(false);
    const auth = byKind(docs, 'TriggerAuthentication', 'batchline-redis') as Obj & { spec: { secretTargetRef: { parameter: string }[] } };
    expect(auth.spec.secretTargetRef.map((r) => r.parameter)).toContain('addresses');
    // The ConfigMap tells API and workers the same shards; the server reads it back.
    const cm = byKind(docs, 'ConfigMap', 'batchline-config') as Obj & { data: Record<string, string> };
    const dir = mkdtempSync(join(tmpdir(), 'batchline-k8s-'));
    writeFileSync(join(dir, 'batchline.yaml'), cm.data['batchline.yaml']);
    const config = loadConfig({
      file: join(dir, 'batchline.yaml'),
      env: { BATCHLINE_REDIS_CLUSTER: 'redis+cluster://:pw@redis-0:6379,redis-1:6379' },
    });
    expect(config.queue.shards).toEqual({ cpu: 3, gpu: 1 });
    expect(config.redis.cluster).toBe('redis+cluster://:pw@redis-0:6379,redis-1:6379');
    for (const d of docs) expect(() => validateManifest(d), `${d.kind} ${d.metadata.name}`).not.toThrow();
  });

  it('falls back to CPU HorizontalPodAutoscalers without KEDA, and fixed replicas with none', () => {
    const doc = exampleDoc('gpu.yaml');
    variants.hpa(doc);
    const docs = documents(renderYaml(doc));
    expect(docs.filter((d) => String(d.apiVersion).startsWith('keda.sh'))).toEqual([]);
    expect(docs.filter((d) => d.kind === 'HorizontalPodAutoscaler').map((d) => d.metadata.name)).toEqual([
      'batchline-api',
      'batchline-worker-cpu',
      'batchline-worker-gpu',
    ]);
    const laptop = documents(renderYaml(exampleText('laptop.yaml')));
    expect(laptop.filter((d) => d.kind === 'HorizontalPodAutoscaler' || d.kind === 'ScaledObject')).toEqual([]);
    expect(byKind(laptop, 'Deployment', 'laptop-worker-cpu').spec).toMatchObject({ replicas: 1 });
    expect(byKind(laptop, 'Deployment', 'laptop-redis')).toBeDefined();
  });

  it('turns startupSeconds into a startup probe budget', () => {
    const doc = exampleDoc('gpu.yaml');
    set(doc, 'spec.pools.gpu.startupSeconds', 42);
    const gpu = byKind(documents(renderYaml(doc)), 'Deployment', 'batchline-worker-gpu');
    expect((pod(gpu).containers[0] as unknown as { startupProbe: unknown }).startupProbe).toEqual({
      httpGet: { path: '/ready', port: 'metrics' },
      periodSeconds: 5,
      timeoutSeconds: 2,
      failureThreshold: 9,
    });
  });

  it('mounts a pvc model source over the model folder', () => {
    const doc = exampleDoc('gpu.yaml');
    variants.pvcAndLogFiles(doc);
    const api = byKind(documents(renderYaml(doc)), 'Deployment', 'batchline-api');
    expect(pod(api).volumes).toContainEqual({ name: 'model-name-gender', persistentVolumeClaim: { claimName: 'models', readOnly: true } });
    expect((pod(api).containers[0] as unknown as { volumeMounts: unknown[] }).volumeMounts).toContainEqual({
      name: 'model-name-gender',
      mountPath: '/app/models/name-gender',
      readOnly: true,
      subPath: 'name-gender',
    });
  });
});
