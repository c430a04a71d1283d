/**
 * Any ONNX model can be served without code: a model dropped into a fresh repository is
 * served through the tensor input, with outputs equal to onnxruntime-node called directly.
 * Models that fail to load or disagree with their config are skipped with the reason.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, inject, it } from 'vitest';
import { ModelRepository } from '../../core/models/repository.ts';
import { gql } from '../support/clients.ts';
import { addModel, linearOnnx, LINEAR_CONFIG, tempRepository } from '../support/model-repo.ts';
import { uniquePrefix } from '../../harness/stack.ts';
import { useStack } from '../support/use-stack.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('repo');
const models = tempRepository();
const linearPath = addModel(models, 'linear', '1', linearOnnx(), LINEAR_CONFIG);
addModel(models, 'disagrees', '1', linearOnnx(), { ...LINEAR_CONFIG, inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 5] }] });
addModel(models, 'wrong-name', '1', linearOnnx(), { ...LINEAR_CONFIG, outputs: [{ name: 'z', datatype: 'FP32', shape: [-1, 3] }] });
addModel(models, 'garbage', '1', 'this is not an onnx file', LINEAR_CONFIG);
const opts = { redisUrl, prefix, models };
const stack = useStack(opts, ['cpu']);

describe('a model dropped into a fresh repository', () => {
  it('is served through the tensor input with outputs equal to onnxruntime-node called directly', async () => {
    const data = [1, 2, 3, 4, -0.5, 0.25, 8, -3];
    const r = await gql<{ predict: { outputs: { name: string; shape: number[]; data: number[] }[]; label: string | null } }>(
      stack.api.url,
      'query($i: PredictionInput!) { predict(model: "linear", input: $i) { label outputs { name shape datatype data } } }',
      { i: { tensors: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data }] } },
    );
    expect(r.body.errors).toBeUndefined();
    const session = await ort.InferenceSession.create(linearPath);
    const direct = await session.run({ x: new ort.Tensor('float32', Float32Array.from(data), [2, 4]) });
    await session.release();
    const out = r.body.data!.predict.outputs[0];
    expect(out.name).toBe('y');
    expect(out.shape).toEqual([2, 3]);
    expect(out.data).toEqual(Array.from(direct.y.data as Float32Array));
    expect(r.body.data!.predict.label).toBeNull();
  });

  it('takes and gives tensors as base64 bytes, with the same answer as a list of numbers', async () => {
    const data = [1, 2, 3, 4, -0.5, 0.25, 8, -3];
    const base64 = Buffer.from(Float32Array.from(data).buffer).toString('base64');
    const q = 'query($i: PredictionInput!) { predict(model: "linear", input: $i) { outputs { shape data base64 } } }';
    type Out = { predict: { outputs: { shape: number[]; data: number[]; base64: string }[] } };
    const asList = await gql<Out>(stack.api.url, q, { i: { tensors: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data }] } });
    const asBytes = await gql<Out>(stack.api.url, q, { i: { tensors: [{ name: 'x', shape: [2, 4], datatype: 'FP32', base64 }] } });
    expect(asBytes.body.errors).toBeUndefined();
    const a = asList.body.data!.predict.outputs[0];
    const b = asBytes.body.data!.predict.outputs[0];
    expect(b.data).toEqual(a.data);
    expect(b.shape).toEqual([2, 3]);
    const bytes = Buffer.from(b.base64, 'base64');
    expect(Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4))).toEqual(b.data);
  });

  it('skips models that fail to load or disagree with their config, with the reason, and serves the rest', async () => {
    const r = await gql<{ models: { name: string; status: string; error: string | null; ready: boolean }[] }>(
      stack.api.url,
      '{ models { name status error ready } }',
    );
    const byName = Object.fromEntries(r.body.data!.models.map((m) => [m.name, m]));
    expect(byName.linear).toMatchObject({ status: 'LOADED', ready: true, error: null });
    expect(byName.disagrees.status).toBe('FAILED');
    expect(byName.disagrees.error).toMatch(/dimension 1 is 4 in the graph, config says 5/);
    expect(byName['wrong-name'].error).toMatch(/config outputs \[z\] but the graph has \[y\]/);
    expect(byName.garbage.status).toBe('FAILED');
    const p = await gql(stack.api.url, '{ predict(model: "disagrees", input: { features: [1, 2, 3, 4, 5] }) { label } }');
    expect(p.status).toBe(503);
    expect(p.body.errors![0].extensions!.code).toBe('MODEL_NOT_READY');
  });

  it('scans without throwing for a missing folder', async () => {
    const repo = await ModelRepository.scan('/nonexistent/batchline');
    expect(repo.versions).toEqual([]);
  });
});

describe('deployment overrides (models.yaml rendered from a ModelServer)', () => {
  it('move a model to another pool and change its batching without touching config.yaml', async () => {
    const { writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const file = join(models, 'overrides.yaml');
    writeFileSync(file, 'linear:\n  pool: gpu\n  batching: { policy: aimd, sloMs: 20 }\n');
    const repo = await ModelRepository.scan(models, { overridesFile: file, verify: false });
    const linear = repo.find('linear')!;
    expect(linear.config.pool).toBe('gpu');
    expect(linear.config.batching).toMatchObject({ policy: 'aimd', sloMs: 20, maxBatchSize: 32 });
  });
});
