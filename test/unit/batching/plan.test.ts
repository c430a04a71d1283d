/**
 * The one place batching is decided (core/batching/plan.ts): for a model version in a pool,
 * the edge batcher's limits and the worker's batching.
 */
import { describe, expect, it } from 'vitest';
import { EDGE_MAX_DELAY_MS, EDGE_MAX_ROWS, batchingPlan, withBatchingDefaults } from '../../../core/batching/plan.ts';
import { MODEL_DEFAULTS, type BatchingSpec } from '../../../core/models/config.ts';

const dynamic = [{ shape: [-1, 4] }];
const model = (batching: Partial<BatchingSpec> = {}, inputs = dynamic) => ({ batching: withBatchingDefaults(batching), inputs });

describe('batchingPlan', () => {
  it('gathers at the edge in both pools; only the gpu worker merges jobs', () => {
    const m = model({ policy: 'aimd', maxBatchSize: 64, maxDelayMs: 8, sloMs: 20 });
    const cpu = batchingPlan('cpu', m);
    const gpu = batchingPlan('gpu', m);
    expect(cpu.edge).toEqual({ maxRows: EDGE_MAX_ROWS, maxDelayMs: EDGE_MAX_DELAY_MS });
    expect(gpu.edge).toEqual(cpu.edge);
    expect(gpu.worker).toEqual({ policy: 'aimd', maxBatchSize: 64, maxDelayMs: 8, sloMs: 20 });
    expect(cpu.worker).toEqual({ policy: 'fixed', maxBatchSize: 1, maxDelayMs: 0, sloMs: 20 });
  });

  it("keeps the edge within the model's own limits", () => {
    expect(batchingPlan('cpu', model({ maxBatchSize: 8, maxDelayMs: 1 })).edge).toEqual({ maxRows: 8, maxDelayMs: 1 });
    expect(batchingPlan('gpu', model({ maxBatchSize: 1 })).edge).toEqual({ maxRows: 1, maxDelayMs: 0 });
  });

  it('does not batch a model whose batch dimension is fixed, at the edge', () => {
    const fixed = model({}, [{ shape: [-1, 4] }, { shape: [1, 4] }]);
    expect(batchingPlan('gpu', fixed).edge).toEqual({ maxRows: 1, maxDelayMs: 0 });
    expect(batchingPlan('gpu', fixed).worker.maxBatchSize).toBe(MODEL_DEFAULTS.batching.maxBatchSize);
  });

  it('runs a model it does not know one job at a time', () => {
    for (const pool of ['cpu', 'gpu'] as const) {
      const p = batchingPlan(pool, undefined);
      expect(p.edge).toEqual({ maxRows: 1, maxDelayMs: 0 });
      expect(p.worker).toMatchObject({ maxBatchSize: 1, maxDelayMs: 0 });
    }
  });

  it('fills what a config leaves out from the model defaults', () => {
    expect(withBatchingDefaults({ maxBatchSize: 4 })).toEqual({ ...MODEL_DEFAULTS.batching, maxBatchSize: 4 });
    expect(withBatchingDefaults(undefined)).toEqual(MODEL_DEFAULTS.batching);
  });
});
