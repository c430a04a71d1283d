import { describe, it, expect } from 'vitest';
import {
  planPool,
  PoolSizingError,
  DEFAULT_BASE_PROCESS_BYTES,
  DEFAULT_SLOT_OVERHEAD_BYTES,
  type PoolSizingInput,
} from '../../../core/worker/sizing.ts';

const Mi = 2 ** 20;
const Gi = 2 ** 30;

describe('planPool', () => {
  // Each row: input, expected slots, intra-op threads, concurrency, deciding bound.
  const table: [string, PoolSizingInput, number, number, number, string][] = [
    [
      'cpu decides: plenty of memory, 4 cores',
      { pool: 'cpu', memoryLimitBytes: 4 * Gi, cpuLimitCores: 4, modelBytes: 100 * Mi },
      4,
      1,
      4,
      'cpu',
    ],
    [
      'memory decides: 1 slot gets every core as intra-op threads',
      { pool: 'cpu', memoryLimitBytes: 320 * Mi, cpuLimitCores: 2, modelBytes: [14 * Mi, 39 * Mi] },
      1,
      2,
      1,
      'memory',
    ],
    [
      'memory decides: 2 slots of 4 threads on 8 cores',
      { pool: 'cpu', memoryLimitBytes: 160 * Mi + 2 * (500 * Mi + 32 * Mi), cpuLimitCores: 8, modelBytes: 500 * Mi },
      2,
      4,
      2,
      'memory',
    ],
    [
      'a tie goes to memory',
      { pool: 'cpu', memoryLimitBytes: 160 * Mi + 2 * 132 * Mi, cpuLimitCores: 2, modelBytes: 100 * Mi },
      2,
      1,
      2,
      'memory',
    ],
    ['fractional cores round down', { pool: 'cpu', memoryLimitBytes: 8 * Gi, cpuLimitCores: 3.5, modelBytes: 10 * Mi }, 3, 1, 3, 'cpu'],
    [
      'below one core still runs one slot',
      { pool: 'cpu', memoryLimitBytes: 1 * Gi, cpuLimitCores: 0.5, modelBytes: 10 * Mi },
      1,
      1,
      1,
      'cpu',
    ],
    ['no memory limit: cpu decides', { pool: 'cpu', cpuLimitCores: 6, modelBytes: 10 * Mi }, 6, 1, 6, 'cpu'],
    ['no CPU limit: host cores', { pool: 'cpu', memoryLimitBytes: 8 * Gi, hostCores: 16, modelBytes: 10 * Mi }, 16, 1, 16, 'cpu'],
    ['no limits at all: one core', { pool: 'cpu', modelBytes: 10 * Mi }, 1, 1, 1, 'cpu'],
    [
      'custom base and overhead',
      { pool: 'cpu', memoryLimitBytes: 1 * Gi, cpuLimitCores: 16, baseProcessBytes: 24 * Mi, slotOverheadBytes: 0, modelBytes: 100 * Mi },
      10,
      1,
      10,
      'memory',
    ],
    [
      'gpu: concurrency is slots x batch',
      { pool: 'gpu', memoryLimitBytes: 4 * Gi, cpuLimitCores: 4, modelBytes: 39 * Mi, gpus: 1, gpuMemoryBytes: 16 * Gi, batchSize: 64 },
      4,
      1,
      256,
      'cpu',
    ],
    [
      'gpu memory decides',
      { pool: 'gpu', memoryLimitBytes: 64 * Gi, cpuLimitCores: 16, modelBytes: 3 * Gi, gpus: 1, gpuMemoryBytes: 16 * Gi, batchSize: 8 },
      5,
      3,
      40,
      'gpu-memory',
    ],
    [
      'two GPUs double the gpu bound',
      { pool: 'gpu', memoryLimitBytes: 64 * Gi, cpuLimitCores: 16, modelBytes: 3 * Gi, gpus: 2, gpuMemoryBytes: 16 * Gi },
      10,
      1,
      10,
      'gpu-memory',
    ],
    [
      'gpu model memory can differ from host memory',
      {
        pool: 'gpu',
        memoryLimitBytes: 64 * Gi,
        cpuLimitCores: 16,
        modelBytes: 1 * Gi,
        gpuModelBytes: 7 * Gi,
        gpus: 1,
        gpuMemoryBytes: 16 * Gi,
      },
      2,
      8,
      2,
      'gpu-memory',
    ],
    [
      'unknown GPU memory skips that bound',
      { pool: 'gpu', memoryLimitBytes: 64 * Gi, cpuLimitCores: 8, modelBytes: 3 * Gi, gpus: 1 },
      8,
      1,
      8,
      'cpu',
    ],
  ];

  it.each(table)('%s', (_name, input, slots, threads, concurrency, decidedBy) => {
    const plan = planPool(input);
    expect({ slots: plan.slots, threads: plan.intraOpThreads, concurrency: plan.concurrency, decidedBy: plan.decidedBy }).toEqual({
      slots,
      threads,
      concurrency,
      decidedBy,
    });
    // The invariant the rule exists for: never more busy threads than cores (when there are cores to share).
    if (plan.cores >= 1) expect(plan.slots * plan.intraOpThreads).toBeLessThanOrEqual(Math.floor(plan.cores));
  });

  it('reports every bound, and the I/O rule it does not apply', () => {
    const plan = planPool({ pool: 'cpu', memoryLimitBytes: 1 * Gi, cpuLimitCores: 4, modelBytes: [14 * Mi, 39 * Mi] });
    expect(plan.bounds).toEqual({ memory: 10, cpu: 4, gpuMemory: null, ioRule: 9 });
    expect(plan.perSlotBytes).toBe(53 * Mi + DEFAULT_SLOT_OVERHEAD_BYTES);
    expect(plan.explanation.join('\n')).toContain('floor((1024 MiB limit - 160 MiB base) / 85 MiB per slot');
    expect(plan.explanation.at(-1)).toBe('decided by cpu: 4 slots x 1 intra-op thread, concurrency 4');
  });

  it('rejects a memory limit that cannot hold one copy, with the numbers', () => {
    const input: PoolSizingInput = { pool: 'cpu', memoryLimitBytes: 256 * Mi, cpuLimitCores: 2, modelBytes: 100 * Mi };
    expect(() => planPool(input)).toThrow(PoolSizingError);
    expect(() => planPool(input)).toThrow(
      'cpu pool: memory limit 256 MiB cannot hold one copy of its models: base process 160 MiB + one slot 132 MiB (models 100 MiB + slot overhead 32 MiB) = 292 MiB',
    );
    expect(DEFAULT_BASE_PROCESS_BYTES).toBe(160 * Mi);
  });

  it('rejects GPU memory that cannot hold one copy', () => {
    const input: PoolSizingInput = {
      pool: 'gpu',
      memoryLimitBytes: 64 * Gi,
      cpuLimitCores: 8,
      modelBytes: 20 * Gi,
      gpus: 1,
      gpuMemoryBytes: 16 * Gi,
    };
    expect(() => planPool(input)).toThrow(
      'gpu pool: GPU memory 16384 MiB cannot hold one copy of its models: reserve 1024 MiB + models 20480 MiB = 21504 MiB',
    );
  });

  it('rejects a gpu pool without a GPU and models without memory', () => {
    expect(() => planPool({ pool: 'gpu', cpuLimitCores: 4, modelBytes: Mi })).toThrow('gpu pool: needs at least one GPU, got 0');
    expect(() => planPool({ pool: 'cpu', modelBytes: [] })).toThrow('model memory must be positive');
  });
});

describe('planPool with a model memory budget', () => {
  it('sets the budget aside once: 200 models of 40 MiB in 1 GiB, 2 GiB limit, 8 cores', () => {
    const models = Array.from({ length: 200 }, () => 40 * Mi);
    // Without a budget the pool cannot be sized at all: every slot would hold all 200 (8000 MiB).
    expect(() => planPool({ pool: 'cpu', memoryLimitBytes: 2 * Gi, cpuLimitCores: 8, modelBytes: models })).toThrow(PoolSizingError);
    const plan = planPool({ pool: 'cpu', memoryLimitBytes: 2 * Gi, cpuLimitCores: 8, modelBytes: models, modelMemoryBytes: Gi });
    // floor((2048 - 160 - 1024) / 32) = 27 by memory; 8 by CPU.
    expect(plan.bounds.memory).toBe(27);
    expect(plan.slots).toBe(8);
    expect(plan.modelMemoryBytes).toBe(Gi);
    // Each resident model is one copy of 40 MiB: 25 fit in 1024 MiB.
    expect(plan.modelsResident).toBe(25);
    expect(plan.explanation.join('\n')).toContain('holds 25 of the pool');
  });

  it('refuses a budget smaller than the largest model, or one the limit cannot hold beside a slot', () => {
    expect(() => planPool({ pool: 'cpu', memoryLimitBytes: Gi, modelBytes: 64 * Mi, modelMemoryBytes: 32 * Mi })).toThrow(
      /largest model \(64 MiB\) does not fit in the model memory budget of 32 MiB/,
    );
    expect(() => planPool({ pool: 'cpu', memoryLimitBytes: Gi, modelBytes: 64 * Mi, modelMemoryBytes: 900 * Mi })).toThrow(
      /cannot hold the model memory budget and one slot/,
    );
  });

  it('without a budget, reports what the limit leaves for models once the slots are sized', () => {
    const plan = planPool({ pool: 'cpu', memoryLimitBytes: Gi, cpuLimitCores: 2, modelBytes: 100 * Mi });
    expect(plan.slots).toBe(2);
    expect(plan.modelMemoryBytes).toBe(Gi - DEFAULT_BASE_PROCESS_BYTES - 2 * DEFAULT_SLOT_OVERHEAD_BYTES);
  });
});
