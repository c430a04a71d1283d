/**
 * The batcher, driven by a manual clock (no sleeping, no wall-clock assertions), over a fake
 * runtime that records batches, and over real onnxruntime for output equality.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Batcher, type BatchEvent } from '../../../core/batching/batcher.ts';
import { ManualClock } from '../../../core/batching/clock.ts';
import { DEFAULT_CONFIG } from '../../../core/config/settings.ts';
import { AimdPolicy, PredictivePolicy } from '../../../core/batching/policies.ts';
import type { NormalizedInput } from '../../../core/prediction/input.ts';
import type { BatchingSpec } from '../../../core/models/config.ts';
import { ModelRepository } from '../../../core/models/repository.ts';
import { InferencePool, type RunResult } from '../../../core/runtime/inference-pool.ts';

const rowsOf = (n: number, width = 2, start = 0): NormalizedInput => ({
  kind: 'tensors',
  tensors: [{ name: 'x', datatype: 'FP32', shape: [n, width], data: Array.from({ length: n * width }, (_, i) => start + i) }],
});

/** A runtime that echoes its input as output and takes `latency(rows)` ms of clock time. */
function fakeRuntime(clock: ManualClock, latency: (rows: number) => number = () => 1) {
  const runs: { model: string; rows: number }[] = [];
  const pending: (() => void)[] = [];
  const run = (model: string, input: NormalizedInput): Promise<RunResult> => {
    const t = input.kind === 'text' ? { shape: [input.texts.length, 1], data: input.texts.map((_, i) => i) } : input.tensors[0];
    runs.push({ model, rows: t.shape[0] });
    return new Promise((resolve) => {
      pending.push(() =>
        resolve({
          outputs: [{ name: 'y', datatype: 'FP32', shape: t.shape, data: Float32Array.from(t.data) }],
          inferenceMs: latency(t.shape[0]),
          rows: t.shape[0],
        }),
      );
    });
  };
  /** Completes every run started so far. */
  const finishAll = async (): Promise<void> => {
    while (pending.length) pending.shift()!();
    await new Promise((r) => setImmediate(r));
  };
  return { runs, run, finishAll };
}

const spec = (s: Partial<BatchingSpec> = {}): BatchingSpec => ({ policy: 'fixed', maxBatchSize: 4, maxDelayMs: 10, sloMs: 100, ...s });

/** A predictive batcher over the fake runtime whose fit is time = 2 + 0.5 x rows. */
function predictiveBatcher(slots: number) {
  const clock = new ManualClock();
  const rt = fakeRuntime(clock);
  const events: BatchEvent[] = [];
  const b = new Batcher({
    run: rt.run,
    spec: () => spec({ policy: 'predictive', maxBatchSize: 64, maxDelayMs: 50, sloMs: 100 }),
    clock,
    slots,
    onBatch: (e) => events.push(e),
  });
  b.policy('m@1').observe(4, 4);
  b.policy('m@1').observe(8, 6);
  return { clock, rt, events, b };
}

describe('Batcher closing rules', () => {
  it('closes a batch as soon as it holds maxBatchSize rows (full), without waiting', async () => {
    const clock = new ManualClock();
    const rt = fakeRuntime(clock);
    const events: BatchEvent[] = [];
    const b = new Batcher({ run: rt.run, spec: () => spec(), clock, onBatch: (e) => events.push(e) });
    const results = [0, 1, 2, 3].map((i) => b.submit('m@1', rowsOf(1, 2, i * 10), 1));
    expect(rt.runs).toEqual([{ model: 'm@1', rows: 4 }]);
    await rt.finishAll();
    const out = await Promise.all(results);
    expect(out.map((o) => o.outputs[0].data)).toEqual([
      [0, 1],
      [10, 11],
      [20, 21],
      [30, 31],
    ]);
    expect(events[0]).toMatchObject({ reason: 'full', rows: 4, requests: 4 });
  });

  it('closes at maxDelayMs measured from the OLDEST request, not the newest', async () => {
    const clock = new ManualClock();
    const rt = fakeRuntime(clock);
    const events: BatchEvent[] = [];
    const b = new Batcher({ run: rt.run, spec: () => spec(), clock, onBatch: (e) => events.push(e) });
    void b.submit('m@1', rowsOf(1), 1);
    clock.advance(6);
    void b.submit('m@1', rowsOf(1), 1);
    clock.advance(3.9);
    expect(rt.runs).toHaveLength(0);
    clock.advance(0.1);
    expect(rt.runs).toEqual([{ model: 'm@1', rows: 2 }]);
    await rt.finishAll();
    expect(events[0].reason).toBe('timeout');
  });

  it('never mixes models or row shapes in one batch', async () => {
    const clock = new ManualClock();
    const rt = fakeRuntime(clock);
    const b = new Batcher({ run: rt.run, spec: () => spec(), clock, slots: 4 });
    void b.submit('a@1', rowsOf(1, 2), 1);
    void b.submit('b@1', rowsOf(1, 2), 1);
    void b.submit('a@1', rowsOf(1, 3), 1);
    void b.submit('a@1', { kind: 'text', texts: ['x'] }, 1);
    void b.submit('a@1', rowsOf(1, 2), 1);
    clock.advance(10);
    expect(rt.runs.map((r) => `${r.model}:${r.rows}`).sort()).toEqual(['a@1:1', 'a@1:1', 'a@1:2', 'b@1:1']);
  });

  it('counts by rows: a request that does not fit closes the batch before it and starts the next', async () => {
    const clock = new ManualClock();
    const rt = fakeRuntime(clock);
    const b = new Batcher({ run: rt.run, spec: () => spec(), clock, slots: 4 });
    void b.submit('m@1', rowsOf(3), 3);
    void b.submit('m@1', rowsOf(2), 2);
    expect(rt.runs).toEqual([{ model: 'm@1', rows: 3 }]);
    clock.advance(10);
    expect(rt.runs).toEqual([
      { model: 'm@1', rows: 3 },
      { model: 'm@1', rows: 2 },
    ]);
  });

  it('closes early (deadline) when waiting longer would miss the oldest request deadline', async () => {
    const clock = new ManualClock();
    const rt = fakeRuntime(clock);
    const events: BatchEvent[] = [];
    const b = new Batcher({
      run: rt.run,
      spec: () => spec({ policy: 'predictive', maxDelayMs: 50, sloMs: 100 }),
      clock,
      onBatch: (e) => events.push(e),
    });
    // Teach the policy that a batch of one takes 15 ms.
    b.policy('m@1').observe(1, 15);
    b.policy('m@1').observe(2, 15);
    void b.submit('m@1', rowsOf(1), 1, 20);
    clock.advance(4.9);
    expect(rt.runs).toHaveLength(0);
    clock.advance(0.1);
    expect(rt.runs).toHaveLength(1);
    await rt.finishAll();
    expect(events[0].reason).toBe('deadline');
  });

  it("predictive: with a slot free, a batch goes once its oldest request has waited one batch's fixed cost (idle)", async () => {
    const { clock, rt, events, b } = predictiveBatcher(2);
    void b.submit('m@1', rowsOf(1), 1);
    clock.advance(1);
    void b.submit('m@1', rowsOf(1), 1);
    clock.advance(0.9);
    expect(rt.runs).toHaveLength(0);
    clock.advance(0.1);
    expect(rt.runs).toEqual([{ model: 'm@1', rows: 2 }]);
    await rt.finishAll();
    expect(events[0].reason).toBe('idle');
  });

  it('predictive: while every slot is busy the batch keeps gathering, and goes when a slot frees', async () => {
    const { clock, rt, events, b } = predictiveBatcher(1);
    void b.submit('m@1', rowsOf(1), 1);
    clock.advance(2); // the first batch goes: the slot is now busy
    for (let i = 0; i < 3; i++) {
      void b.submit('m@1', rowsOf(1), 1);
      clock.advance(3);
    }
    expect(rt.runs).toHaveLength(1);
    await rt.finishAll();
    expect(rt.runs.map((r) => r.rows)).toEqual([1, 3]);
    await rt.finishAll();
    expect(events.map((e) => e.reason)).toEqual(['idle', 'idle']);
  });

  it('aimd: a free slot takes what has gathered at once; while every slot is busy a batch gathers past maxDelayMs and goes when the slot frees', async () => {
    const clock = new ManualClock();
    const rt = fakeRuntime(clock);
    const events: BatchEvent[] = [];
    const b = new Batcher({
      run: rt.run,
      spec: () => spec({ policy: 'aimd', maxBatchSize: 64, maxDelayMs: 2, sloMs: 100 }),
      clock,
      slots: 1,
      onBatch: (e) => events.push(e),
    });
    void b.submit('m@1', rowsOf(1), 1);
    expect(rt.runs).toEqual([{ model: 'm@1', rows: 1 }]);
    for (let i = 0; i < 3; i++) {
      void b.submit('m@1', rowsOf(1), 1);
      clock.advance(3);
    }
    expect(rt.runs).toHaveLength(1);
    await rt.finishAll();
    expect(rt.runs.map((r) => r.rows)).toEqual([1, 3]);
    await rt.finishAll();
    expect(events.map((e) => e.reason)).toEqual(['idle', 'idle']);
  });

  it('fixed never dispatches early: with a slot free it still waits maxDelayMs', async () => {
    const clock = new ManualClock();
    const rt = fakeRuntime(clock);
    const b = new Batcher({ run: rt.run, spec: () => spec({ maxDelayMs: 10 }), clock });
    void b.submit('m@1', rowsOf(1), 1);
    clock.advance(9.9);
    expect(rt.runs).toHaveLength(0);
    clock.advance(0.1);
    expect(rt.runs).toHaveLength(1);
  });

  it('holds closed batches while every runtime slot is busy, and runs them in order', async () => {
    const clock = new ManualClock();
    const rt = fakeRuntime(clock);
    const b = new Batcher({ run: rt.run, spec: () => spec({ maxBatchSize: 2 }), clock, slots: 1 });
    for (let i = 0; i < 6; i++) void b.submit('m@1', rowsOf(1, 2, i), 1);
    expect(rt.runs).toHaveLength(1);
    expect(b.waiting).toBe(2);
    await rt.finishAll();
    expect(rt.runs).toHaveLength(2);
    await rt.finishAll();
    await rt.finishAll();
    expect(rt.runs.map((r) => r.rows)).toEqual([2, 2, 2]);
  });
});

describe('adaptive policies', () => {
  it('AIMD starts at its largest batch', () => {
    expect(new AimdPolicy({ max: 64, sloMs: 50 }).limit()).toBe(64);
  });

  it('AIMD raises its limit step by step while batches meet the SLO', () => {
    const p = new AimdPolicy({ max: 64, sloMs: 50, start: 1 });
    expect(p.limit()).toBe(1);
    for (let i = 0; i < 10; i++) p.observe(p.limit(), 5);
    expect(p.limit()).toBe(11);
  });

  it('AIMD cuts its limit by about 10% on a miss, and again on the next', () => {
    const p = new AimdPolicy({ max: 64, sloMs: 50, start: 40 });
    p.observe(40, 80);
    expect(p.limit()).toBe(36);
    p.observe(36, 80);
    expect(p.limit()).toBe(32);
  });

  it('AIMD grows only on batches that used the whole limit', () => {
    const p = new AimdPolicy({ max: 64, sloMs: 50, start: 8 });
    p.observe(3, 5);
    expect(p.limit()).toBe(8);
  });

  it('AIMD settles around the largest batch that meets the SLO for a linear latency', () => {
    const p = new AimdPolicy({ max: 256, sloMs: 50 });
    const latency = (rows: number) => 2 + 0.5 * rows; // meets 50 ms up to 96 rows
    for (let i = 0; i < 500; i++) p.observe(p.limit(), latency(p.limit()));
    expect(p.limit()).toBeGreaterThan(80);
    expect(p.limit()).toBeLessThanOrEqual(97);
  });

  it('predictive picks the largest batch whose predicted run meets the remaining deadline', () => {
    const p = new PredictivePolicy({ max: 64, sloMs: 50 });
    for (const rows of [1, 4, 8, 16, 32]) p.observe(rows, 2 + 0.5 * rows);
    expect(p.model!.a).toBeCloseTo(2, 6);
    expect(p.model!.b).toBeCloseTo(0.5, 6);
    expect(p.limit(12)).toBe(20); // (12 - 2) / 0.5
    expect(p.limit(2.2)).toBe(1); // never below one row
    const small = new PredictivePolicy({ max: 30, sloMs: 50 });
    for (const rows of [1, 4, 8, 16, 32]) small.observe(rows, 2 + 0.5 * rows);
    expect(small.limit(50)).toBe(30); // capped by maxBatchSize
  });

  it('predictive grows a batch no further than where its fixed cost is a tenth of the run', () => {
    // time = 2 + 0.5 x rows: at 36 rows the fixed 2 ms is 10% of 20 ms; more rows add latency, hardly throughput.
    const p = new PredictivePolicy({ max: 256, sloMs: 1000 });
    for (const rows of [1, 4, 8, 16, 32]) p.observe(rows, 2 + 0.5 * rows);
    expect(p.limit(1000)).toBe(36);
    // A GPU-like cost (large fixed cost, tiny per row) allows the whole maxBatchSize.
    const gpu = new PredictivePolicy({ max: 256, sloMs: 1000 });
    for (const rows of [1, 64, 128]) gpu.observe(rows, 5 + 0.01 * rows);
    expect(gpu.limit(1000)).toBe(256);
  });
});

describe('batched inference on real onnxruntime', () => {
  const models = fileURLToPath(new URL('../../../models', import.meta.url));
  let pool: InferencePool;

  beforeAll(async () => {
    const repo = await ModelRepository.scan(models);
    const mv = repo.find('mlp-bench')!;
    pool = await InferencePool.start({
      models: [{ key: 'mlp-bench@1', path: mv.path, config: mv.config }],
      threads: 1,
      chain: ['cpu'],
      settings: { intraOpThreads: 1, webgpu: DEFAULT_CONFIG.workers.webgpu },
    });
  });

  afterAll(async () => {
    await pool?.close();
  });

  it('gives each of N concurrent requests exactly its own rows, equal to unbatched inference', async () => {
    const clock = new ManualClock();
    const b = new Batcher({ run: (k, i) => pool.run(k, i), spec: () => spec({ maxBatchSize: 64, maxDelayMs: 1000 }), clock });
    const requests = Array.from({ length: 12 }, (_, r) => {
      const rows = 1 + (r % 3);
      const data = Array.from({ length: rows * 512 }, (_, i) => Math.sin(r * 1000 + i));
      return {
        rows,
        input: { kind: 'tensors', tensors: [{ name: 'input', datatype: 'FP32', shape: [rows, 512], data }] } as NormalizedInput,
      };
    });
    const batched = requests.map((q) => b.submit('mlp-bench@1', q.input, q.rows));
    clock.advance(1000);
    const outs = await Promise.all(batched);
    expect(new Set(outs.map((o) => o.batchRows))).toEqual(new Set([24]));
    for (let i = 0; i < requests.length; i++) {
      const alone = await pool.run('mlp-bench@1', requests[i].input);
      const mine = outs[i].outputs[0];
      expect(mine.shape).toEqual([requests[i].rows, 10]);
      const expected = Array.from(alone.outputs[0].data as Float32Array);
      // Same rows, same weights; GEMM kernels may round differently at other batch sizes.
      mine.data.forEach((v, k) => expect(v).toBeCloseTo(expected[k], 4));
    }
  });
});
