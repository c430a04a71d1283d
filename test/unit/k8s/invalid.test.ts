import { describe, it, expect } from 'vitest';
import { ModelServerError } from '../../../k8s/plan.ts';
import { parseQuantity, ceilMi } from '../../../k8s/quantity.ts';
import { exampleDoc, exampleText, load, set } from './manifests.ts';

type Doc = ReturnType<typeof exampleDoc>;

function errorsOf(doc: unknown): string[] {
  try {
    load(doc);
  } catch (e) {
    if (e instanceof ModelServerError) return e.errors;
    throw e;
  }
  return [];
}

describe('invalid ModelServers are rejected with the field and the numbers', () => {
  const table: [string, string, (d: Doc) => void, string][] = [
    [
      'memory too small for one copy',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.pools.cpu.resources.limits.memory', '200Mi');
        set(d, 'spec.pools.cpu.modelMemory', undefined);
      },
      'spec.pools.cpu.resources.limits.memory: cpu pool: memory limit 200 MiB cannot hold one copy of its models: base process 160 MiB + one slot 85 MiB (models 53 MiB + slot overhead 32 MiB) = 245 MiB [models: name-gender 14 MiB, mlp-bench 39 MiB]',
    ],
    [
      'GPU memory too small for one copy',
      'gpu.yaml',
      (d) => {
        set(d, 'spec.pools.gpu.gpuMemory', '1Gi');
        set(d, 'spec.models.1.gpuMemory', '512Mi');
      },
      'spec.pools.gpu.gpuMemory: gpu pool: GPU memory 1024 MiB cannot hold one copy of its models: reserve 1024 MiB + models 512 MiB = 1536 MiB [models: mlp-bench 39 MiB]',
    ],
    [
      'base memory above the limit',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.pools.cpu.baseMemory', '2Gi');
        set(d, 'spec.pools.cpu.modelMemory', undefined);
      },
      'spec.pools.cpu.resources.limits.memory: cpu pool: memory limit 1024 MiB cannot hold one copy of its models: base process 2048 MiB + one slot 85 MiB (models 53 MiB + slot overhead 32 MiB) = 2133 MiB [models: name-gender 14 MiB, mlp-bench 39 MiB]',
    ],
    [
      'a model memory budget smaller than the largest model',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.pools.cpu.modelMemory', '32Mi');
      },
      'spec.pools.cpu.resources.limits.memory: cpu pool: its largest model (39 MiB) does not fit in the model memory budget of 32 MiB [models: name-gender 14 MiB, mlp-bench 39 MiB]',
    ],
    [
      'a model memory budget the limit cannot hold beside one slot',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.pools.cpu.modelMemory', '900Mi');
      },
      'spec.pools.cpu.resources.limits.memory: cpu pool: memory limit 1024 MiB cannot hold the model memory budget and one slot: base 160 MiB + budget 900 MiB + slot overhead 32 MiB = 1092 MiB [models: name-gender 14 MiB, mlp-bench 39 MiB]',
    ],
    [
      'requests above limits',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.pools.cpu.resources.requests', { cpu: '6' });
      },
      'spec.pools.cpu.resources.requests.cpu: 6 exceeds spec.pools.cpu.resources.limits.cpu 4',
    ],
    [
      'GPU request unlike the limit',
      'gpu.yaml',
      (d) => {
        set(d, 'spec.pools.gpu.resources.requests', { 'nvidia.com/gpu': 2 });
      },
      'spec.pools.gpu.resources.requests.nvidia.com/gpu: 2 must equal spec.pools.gpu.resources.limits.nvidia.com/gpu 1 (GPUs cannot be overcommitted)',
    ],
    [
      'a zero CPU limit',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.pools.cpu.resources.limits.cpu', '0');
      },
      'spec.pools.cpu.resources.limits.cpu: must be positive, got 0',
    ],
    [
      'a model in an undefined pool',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.models.1.pool', 'gpu');
      },
      "spec.models[1].pool: 'mlp-bench' runs in pool gpu, but spec.pools.gpu is not defined",
    ],
    [
      'a pool without models',
      'gpu.yaml',
      (d) => {
        set(d, 'spec.models.1.pool', 'cpu');
      },
      'spec.pools.gpu: defined, but no model in spec.models runs in it',
    ],
    [
      'a duplicate model',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.models.1.name', 'name-gender');
      },
      "spec.models[1].name: 'name-gender' clashes with spec.models[0].name 'name-gender'",
    ],
    [
      'a pvc source without a claim',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.models.0.source', { type: 'pvc' });
      },
      'spec.models[0].source.claimName: required for a pvc source',
    ],
    [
      'a claim on an image source',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.models.0.source', { claimName: 'x' });
      },
      'spec.models[0].source: claimName and subPath apply only to type pvc, but type is image',
    ],
    [
      'minReplicas above maxReplicas',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.pools.cpu.autoscaling.minReplicas', 30);
      },
      'spec.pools.cpu.autoscaling.minReplicas: 30 exceeds maxReplicas 20',
    ],
    [
      'two scaling targets',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.pools.cpu.autoscaling.targetQueueDepth', 5);
      },
      'spec.pools.cpu.autoscaling: set targetQueueDepth (5) or targetLatencyMs (250), not both',
    ],
    [
      'a latency target within the SLO',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.pools.cpu.autoscaling.targetLatencyMs', 40);
      },
      "spec.pools.cpu.autoscaling.targetLatencyMs: 40 ms leaves no time to wait: the slowest model's SLO is 50 ms",
    ],
    [
      'scale to zero without KEDA',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.autoscaling', { provider: 'hpa' });
        set(d, 'spec.pools.cpu.autoscaling.minReplicas', 0);
      },
      'spec.pools.cpu.autoscaling.minReplicas: 0 needs provider keda (a HorizontalPodAutoscaler cannot scale to zero)',
    ],
    [
      'a replica range with fixed replicas',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.autoscaling', { provider: 'none' });
      },
      'spec.pools.cpu.autoscaling.maxReplicas: 20 differs from minReplicas 2, but spec.autoscaling.provider is none (fixed replicas)',
    ],
    [
      'Prometheus without KEDA',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.autoscaling', { provider: 'hpa', prometheus: { serverAddress: 'http://p:9090' } });
      },
      'spec.autoscaling.prometheus: applies only to provider keda, but provider is hpa',
    ],
    [
      'API replicas range upside down',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.api.autoscaling', { minReplicas: 5, maxReplicas: 3 });
      },
      'spec.api.autoscaling.minReplicas: 5 exceeds maxReplicas 3',
    ],
    [
      'no Redis at all',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.redis', {});
      },
      'spec.redis: set secretRef (a Secret with the connection) or deploy: true (development Redis)',
    ],
    [
      'two Redis',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.redis.deploy', true);
      },
      'spec.redis: set secretRef or deploy: true, not both',
    ],
    [
      'a development Redis as a cluster',
      'laptop.yaml',
      (d) => {
        set(d, 'spec.redis.cluster', true);
      },
      'spec.redis: cluster: true needs a secretRef to the cluster; deploy: true renders a single development Redis',
    ],
    [
      'a development Redis KEDA cannot find',
      'laptop.yaml',
      (d) => {
        set(d, 'metadata.namespace', undefined);
        set(d, 'spec.autoscaling', { provider: 'keda' });
      },
      'metadata.namespace: required with spec.redis.deploy and provider keda (KEDA reaches the Redis Service from its own namespace)',
    ],
    [
      'a name that makes bad Service names',
      'cpu-only.yaml',
      (d) => {
        set(d, 'metadata.name', '1-Batchline');
      },
      "metadata.name: '1-Batchline' must be a lowercase DNS label of at most 40 characters starting with a letter",
    ],
    [
      'the wrong apiVersion',
      'cpu-only.yaml',
      (d) => {
        set(d, 'apiVersion', 'batchline.dev/v1');
      },
      'apiVersion: must be batchline.dev/v1alpha1, got batchline.dev/v1',
    ],
    [
      'a schema error comes first',
      'cpu-only.yaml',
      (d) => {
        set(d, 'spec.pools.cpu.resources.limits.memory', 'lots');
      },
      "spec.pools.cpu.resources.limits.memory: 'lots' is not a Kubernetes quantity",
    ],
  ];

  it.each(table)('%s', (_name, file, mutate, message) => {
    const doc = exampleDoc(file);
    mutate(doc);
    expect(errorsOf(doc)).toContain(message);
  });

  it('reports every problem at once', () => {
    const doc = exampleDoc('cpu-only.yaml');
    set(doc, 'spec.pools.cpu.autoscaling.minReplicas', 30);
    set(doc, 'spec.redis.deploy', true);
    expect(errorsOf(doc)).toHaveLength(2);
  });

  it('rejects a file that is not one document', () => {
    expect(errorsOf(`${exampleText('laptop.yaml')}\n---\n${exampleText('gpu.yaml')}`)).toEqual([
      'expected one ModelServer document, found 2',
    ]);
    expect(errorsOf('')).toEqual(['expected one ModelServer document, found 0']);
  });

  it('accepts the examples', () => {
    for (const f of ['laptop.yaml', 'cpu-only.yaml', 'gpu.yaml']) expect(errorsOf(exampleText(f))).toEqual([]);
  });
});

describe('quantities', () => {
  it.each([
    ['500m', 0.5],
    ['2', 2],
    [3, 3],
    ['1.5', 1.5],
    ['1Gi', 2 ** 30],
    ['512Mi', 512 * 2 ** 20],
    ['1G', 1e9],
    ['64k', 64_000],
    ['1e3', 1000],
    ['.5Ki', 512],
  ] as [string | number, number][])('%s is %d', (text, value) => {
    expect(parseQuantity(text)).toBe(value);
  });

  it('rejects what is not one', () => {
    expect(() => parseQuantity('1 GB')).toThrow("'1 GB' is not a Kubernetes quantity");
  });

  it('rounds measurements up to whole MiB', () => {
    expect([ceilMi(13_987_840), ceilMi(2 ** 20), ceilMi(1)]).toEqual(['14Mi', '1Mi', '1Mi']);
  });
});
