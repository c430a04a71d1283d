/**
 * Dynamic batching. Requests of one model, version and row shape gather in an open batch,
 * which closes when:
 *   - `full`: it holds the policy's row limit;
 *   - `timeout`: its OLDEST request has waited `maxDelayMs`;
 *   - `deadline`: waiting longer would make its oldest request miss its deadline, given the
 *     policy's prediction of the batch's run time;
 *   - `idle`: a runtime slot is free and its oldest request has waited as long as the policy
 *     asks before dispatching early (`aimd`: not at all; `predictive`: one batch's fixed cost).
 *     Such a batch does not close on `timeout` while every slot is busy: it keeps gathering
 *     and goes when a slot frees.
 * Closed batches run as soon as a runtime slot is free (one per inference thread); while
 * every slot is busy they wait in order, and new requests open a new batch.
 * Each request gets exactly its own rows of the output.
 */
import type { NormalizedInput } from '../prediction/input.ts';
import type { BatchingSpec } from '../models/config.ts';
import type { OutputTensor } from '../runtime/types.ts';
import type { RunResult } from '../runtime/inference-pool.ts';
import { sliceRows } from '../runtime/postprocess.ts';
import type { TensorValue } from '../tensor/tensor.ts';
import { systemClock, type Clock } from './clock.ts';
import { createPolicy, type BatchPolicy } from './policies.ts';
import { mergeInputs, shapeSignature } from './merge.ts';

export type CloseReason = 'full' | 'timeout' | 'deadline' | 'idle';

export interface BatchOutcome {
  /** This request's rows of every output. */
  outputs: TensorValue[];
  inferenceMs: number;
  /** Rows in the inference that answered it. */
  batchRows: number;
  closeReason: CloseReason;
  /** Queue time of the batch, when its runner reports one. */
  queueMs?: number;
}

interface Item {
  input: NormalizedInput;
  rows: number;
  arrivedAt: number;
  /** Clock time by which this request must be answered (its SLO, or its own deadline if sooner). */
  deadlineAt: number;
  /** Clock time after which nobody waits for this request's answer. */
  giveUpAt: number;
  resolve: (o: BatchOutcome) => void;
  reject: (e: Error) => void;
}

interface Batch {
  key: string;
  model: string;
  items: Item[];
  rows: number;
  timer?: unknown;
  reason?: CloseReason;
}

export interface BatchEvent {
  model: string;
  rows: number;
  requests: number;
  reason: CloseReason;
  latencyMs: number;
  limit: number;
  policy: string;
}

export interface BatcherOptions {
  /** Runs one merged input; typically InferencePool.run. `waitMs`: how long the longest-waiting request of the batch still waits. */
  run: (model: string, input: NormalizedInput, meta: { waitMs: number }) => Promise<RunResult>;
  /** Batching settings of a model (`name@version`). */
  spec: (model: string) => BatchingSpec;
  /** Batches that may run at once (inference threads). @defaultValue 1 */
  slots?: number;
  clock?: Clock;
  /** Called after every batch, for metrics and logs. */
  onBatch?: (e: BatchEvent) => void;
}

export class Batcher {
  private readonly options: BatcherOptions;
  private readonly clock: Clock;
  private readonly slots: number;
  private readonly open = new Map<string, Batch>();
  private readonly ready: Batch[] = [];
  private readonly policies = new Map<string, BatchPolicy>();
  private inflight = 0;

  constructor(options: BatcherOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.slots = Math.max(1, options.slots ?? 1);
  }

  /** The policy of a model (created on first use). */
  policy(model: string): BatchPolicy {
    let p = this.policies.get(model);
    if (!p) {
      p = createPolicy(this.options.spec(model));
      this.policies.set(model, p);
    }
    return p;
  }

  /** Batches closed and waiting for a runtime slot. */
  get waiting(): number {
    return this.ready.length;
  }

  /**
   * Adds one request. It should be answered within the model's SLO, or `deadlineMs` from
   * now when that is sooner (the request's own deadline).
   */
  submit(model: string, input: NormalizedInput, rows: number, deadlineMs?: number): Promise<BatchOutcome> {
    const spec = this.options.spec(model);
    const now = this.clock.now();
    return new Promise((resolve, reject) => {
      const item: Item = {
        input,
        rows,
        arrivedAt: now,
        deadlineAt: now + Math.min(deadlineMs ?? Infinity, spec.sloMs),
        giveUpAt: now + (deadlineMs ?? Infinity),
        resolve,
        reject,
      };
      const key = `${model}#${shapeSignature(input)}`;
      let batch = this.open.get(key);
      if (batch && batch.rows + rows > this.limitFor(batch)) {
        // It does not fit: what is there goes as a full batch, this one starts the next.
        this.close(batch, 'full');
        batch = undefined;
      }
      if (!batch) {
        batch = { key, model, items: [], rows: 0 };
        this.open.set(key, batch);
      }
      batch.items.push(item);
      batch.rows += rows;
      if (batch.rows >= this.limitFor(batch) || spec.maxDelayMs <= 0) this.close(batch, 'full');
      else this.schedule(batch);
    });
  }

  private limitFor(batch: Batch): number {
    const oldest = batch.items[0];
    const remaining = oldest ? oldest.deadlineAt - this.clock.now() : undefined;
    return this.policy(batch.model).limit(remaining);
  }

  /** Sets the batch's timer to the earlier of its max-delay and its oldest request's last safe moment. */
  private schedule(batch: Batch): void {
    if (batch.timer !== undefined) this.clock.clearTimer(batch.timer);
    const oldest = batch.items[0];
    const spec = this.options.spec(batch.model);
    const now = this.clock.now();
    const timeoutAt = oldest.arrivedAt + spec.maxDelayMs;
    const runMs = this.policy(batch.model).predictMs(batch.rows);
    const deadlineAt = runMs === undefined ? Infinity : oldest.deadlineAt - runMs;
    if (deadlineAt <= now) {
      this.close(batch, 'deadline');
      return;
    }
    const reason: CloseReason = deadlineAt < timeoutAt ? 'deadline' : 'timeout';
    const closeAt = Math.min(timeoutAt, deadlineAt);
    const earlyAt = this.earlyAt(batch);
    if (earlyAt !== undefined && earlyAt < closeAt && this.inflight < this.slots) {
      if (earlyAt <= now) {
        this.close(batch, 'idle');
        return;
      }
      // Re-checked when it fires: it closes only if a slot is still free, else it waits for one (see pump).
      batch.timer = this.clock.setTimer(() => this.schedule(batch), earlyAt - now);
      return;
    }
    batch.timer = this.clock.setTimer(() => this.due(batch, reason), closeAt - now);
  }

  private due(batch: Batch, reason: CloseReason): void {
    // A batch of a policy that dispatches early goes the moment a slot frees (see pump). While
    // every slot is busy, closing it on timeout could not make it run sooner: it would only stop
    // it gathering, and a queue of small batches would form behind the busy slots (found in
    // virtual time: aimd with maxDelayMs 2 on an 8 ms GPU run fell behind at 500 requests/s).
    if (reason === 'timeout' && this.inflight >= this.slots && this.earlyAt(batch) !== undefined) {
      batch.timer = undefined;
      return;
    }
    this.close(batch, reason);
  }

  /** When the batch's oldest request has waited long enough to go early to a free slot, if the policy dispatches early. */
  private earlyAt(batch: Batch): number | undefined {
    const after = this.policy(batch.model).dispatchAfterMs();
    return after === undefined ? undefined : batch.items[0].arrivedAt + after;
  }

  private close(batch: Batch, reason: CloseReason): void {
    if (batch.reason) return;
    batch.reason = reason;
    if (batch.timer !== undefined) this.clock.clearTimer(batch.timer);
    if (this.open.get(batch.key) === batch) this.open.delete(batch.key);
    this.ready.push(batch);
    this.pump();
  }

  private pump(): void {
    while (this.inflight < this.slots && this.ready.length > 0) {
      const batch = this.ready.shift()!;
      this.inflight++;
      void this.execute(batch).finally(() => {
        this.inflight--;
        this.pump();
        // A slot is free: open batches that dispatch early and have waited long enough go now.
        if (this.inflight < this.slots)
          for (const open of [...this.open.values()]) if (this.earlyAt(open) !== undefined) this.schedule(open);
      });
    }
  }

  private async execute(batch: Batch): Promise<void> {
    const policy = this.policy(batch.model);
    const limit = policy.limit();
    let result: RunResult;
    try {
      const waitMs = Math.max(...batch.items.map((i) => i.giveUpAt)) - this.clock.now();
      result = await this.options.run(batch.model, mergeInputs(batch.items.map((i) => i.input)), { waitMs });
    } catch (e) {
      for (const item of batch.items) item.reject(e as Error);
      return;
    }
    // The run's own time is what the policies model (time waiting for a thread is not).
    const latencyMs = result.inferenceMs;
    policy.observe(batch.rows, latencyMs);
    this.options.onBatch?.({
      model: batch.model,
      rows: batch.rows,
      requests: batch.items.length,
      reason: batch.reason!,
      latencyMs,
      limit,
      policy: policy.name,
    });
    let offset = 0;
    for (const item of batch.items) {
      item.resolve({
        outputs: sliceRows(result.outputs as OutputTensor[], offset, item.rows),
        inferenceMs: result.inferenceMs,
        batchRows: batch.rows,
        closeReason: batch.reason!,
        queueMs: result.queueMs,
      });
      offset += item.rows;
    }
  }

  /** Closes every open batch now (used when a worker stops). */
  flush(): void {
    for (const batch of [...this.open.values()]) this.close(batch, 'timeout');
  }
}
