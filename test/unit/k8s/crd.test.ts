import { describe, it, expect } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { parse } from 'yaml';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition';
import { CRD_PATH, checkSchema, loadCrdSchema, fieldPath } from '../../../k8s/schema.ts';
import { EXAMPLES_DIR, exampleDoc, set } from './manifests.ts';

const examples = readdirSync(EXAMPLES_DIR)
  .filter((f) => f.endsWith('.yaml'))
  .sort();

type Node = Record<string, unknown>;

/** Every schema node, with its path, for the structural-schema rules the API server enforces. */
function* nodes(schema: Node, path = ''): Generator<[string, Node]> {
  yield [path, schema];
  for (const [k, v] of Object.entries((schema.properties ?? {}) as Record<string, Node>)) yield* nodes(v, `${path}.${k}`);
  if (schema.items) yield* nodes(schema.items as Node, `${path}[]`);
  if (typeof schema.additionalProperties === 'object') yield* nodes(schema.additionalProperties as Node, `${path}{}`);
}

describe('ModelServer CRD', () => {
  it('is a valid CustomResourceDefinition', () => {
    const crd = new CustomResourceDefinition(parse(readFileSync(CRD_PATH, 'utf8')));
    expect(() => crd.validate()).not.toThrow();
    expect(crd.metadata?.name).toBe(`${crd.spec.names.plural}.${crd.spec.group}`);
  });

  it('is a structural schema: every node typed, no additionalProperties beside properties', () => {
    for (const [path, node] of nodes(loadCrdSchema())) {
      const typed =
        node.type !== undefined || node['x-kubernetes-int-or-string'] === true || node['x-kubernetes-preserve-unknown-fields'] === true;
      expect(typed, `${path || '<root>'} has no type`).toBe(true);
      expect(
        node.properties !== undefined && node.additionalProperties !== undefined,
        `${path} has properties and additionalProperties`,
      ).toBe(false);
    }
  });

  it.each(examples)('accepts the example %s', (file) => {
    expect(checkSchema(exampleDoc(file)).errors).toEqual([]);
  });

  it('applies its defaults, nested ones included', () => {
    const { value } = checkSchema(exampleDoc('gpu.yaml'));
    const spec = (value as { spec: Record<string, Record<string, unknown>> }).spec;
    expect(spec.api).toMatchObject({ replicas: 2, graphiql: false, service: { type: 'ClusterIP', port: 80 } });
    expect(spec.autoscaling).toMatchObject({ provider: 'keda', pollingIntervalSeconds: 15, cooldownSeconds: 300 });
    expect(spec.redis).toMatchObject({
      prefix: 'batchline',
      deploy: false,
      secretRef: { name: 'batchline-redis', key: 'url', addressKey: 'address' },
    });
    expect(spec.logs).toEqual({ level: 'info', retentionDays: 7, toFile: false });
    expect((spec.models as unknown as Node[])[0]).toMatchObject({ pool: 'cpu', source: { type: 'image' } });
  });

  // Each row: a path to set (undefined deletes it), the value, and the message expected.
  const broken: [string, string | string[], unknown, string][] = [
    ['no models', 'spec.models', undefined, 'spec.models: required'],
    ['empty models', 'spec.models', [], 'spec.models: must NOT have fewer than 1 items'],
    ['a model without memory', 'spec.models.0.memory', undefined, 'spec.models[0].memory: required'],
    [
      'a memory that is not a quantity',
      'spec.models.0.memory',
      '14 megabytes',
      "spec.models[0].memory: '14 megabytes' is not a Kubernetes quantity",
    ],
    [
      'a memory that is neither number nor string',
      'spec.models.0.memory',
      true,
      'spec.models[0].memory: must be a number or a quantity string',
    ],
    ['an unknown pool', 'spec.models.0.pool', 'tpu', 'spec.models[0].pool: must be one of cpu, gpu'],
    ['a misspelt field', 'spec.pools.cpu.autoscalling', {}, 'spec.pools.cpu.autoscalling: unknown field'],
    ['a pool without limits', 'spec.pools.cpu.resources', {}, 'spec.pools.cpu.resources.limits: required'],
    ['a gpu pool without GPU memory', 'spec.pools.gpu.gpuMemory', undefined, 'spec.pools.gpu.gpuMemory: required'],
    [
      'a gpu pool without GPUs',
      ['spec', 'pools', 'gpu', 'resources', 'limits', 'nvidia.com/gpu'],
      undefined,
      'spec.pools.gpu.resources.limits.nvidia.com/gpu: required',
    ],
    ['a batch size of 0', 'spec.models.1.batching.maxBatchSize', 0, 'spec.models[1].batching.maxBatchSize: must be >= 1'],
    ['an unknown autoscaler', 'spec.autoscaling.provider', 'vpa', 'spec.autoscaling.provider: must be one of keda, hpa, none'],
    ['a string for a boolean', 'spec.api.graphiql', 'yes', 'spec.api.graphiql: must be boolean'],
    ['no image tag', 'spec.image.tag', undefined, 'spec.image.tag: required'],
  ];

  it.each(broken)('rejects %s', (_name, path, value, message) => {
    const doc = exampleDoc('gpu.yaml');
    set(doc, path, value);
    expect(checkSchema(doc).errors).toContain(message);
  });

  it('names fields as kubectl does', () => {
    expect(fieldPath('/spec/models/0/memory')).toBe('spec.models[0].memory');
    expect(fieldPath('/spec/pools/gpu/resources/limits/nvidia.com~1gpu')).toBe('spec.pools.gpu.resources.limits.nvidia.com/gpu');
  });
});
