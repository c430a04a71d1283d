/**
 * Issue 25 item 6: the worker moves a batch's input to its inference thread instead of cloning
 * it. Real onnxruntime-node on mlp-bench: a moved input gives exactly the outputs a cloned one
 * gives, the caller's buffer is detached (it was moved, not copied), and without `transfer` the
 * caller keeps its values.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../core/config/settings.ts';
import { ModelRepository } from '../../core/models/repository.ts';
import { fromWire, toWire, type NormalizedInput } from '../../core/prediction/input.ts';
import { InferencePool } from '../../core/runtime/inference-pool.ts';

const MODELS = fileURLToPath(new URL('../../models', import.meta.url));
const WIDTH = 512;

describe('moving a batch to the inference thread', () => {
  let pool: InferencePool;
  beforeAll(async () => {
    const repo = await ModelRepository.scan(MODELS);
    const mv = repo.find('mlp-bench')!;
    pool = await InferencePool.start({
      models: [{ key: 'mlp-bench@1', path: mv.path, config: mv.config }],
      threads: 1,
      chain: ['cpu'],
      settings: { intraOpThreads: 1, webgpu: loadConfig({}).workers.webgpu },
    });
  }, 60_000);
  afterAll(() => pool?.close());

  const input = (rows: number): NormalizedInput => {
    const data = new Float32Array(rows * WIDTH);
    for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37);
    // As the worker gets it: off a job's wire form.
    return fromWire(toWire({ kind: 'tensors', tensors: [{ name: 'input', datatype: 'FP32', shape: [rows, WIDTH], data }] }));
  };
  const values = (i: NormalizedInput): Float32Array => (i.kind === 'tensors' ? (i.tensors[0].data as Float32Array) : new Float32Array());

  it('answers a moved input exactly as a cloned one, and detaches the caller’s buffer', async () => {
    const kept = input(7);
    const moved = input(7);
    const before = Array.from(values(kept));
    const cloned = await pool.run('mlp-bench@1', kept);
    const transferred = await pool.run('mlp-bench@1', moved, { transfer: true });
    expect(Array.from(values(kept))).toEqual(before);
    expect(values(moved).byteLength).toBe(0);
    expect(transferred.rows).toBe(7);
    expect(transferred.outputs.map((o) => [o.name, o.shape, Array.from(o.data as Float32Array)])).toEqual(
      cloned.outputs.map((o) => [o.name, o.shape, Array.from(o.data as Float32Array)]),
    );
    expect(cloned.outputs[0].shape).toEqual([7, 10]);
  });
});
