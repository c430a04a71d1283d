/**
 * The API's edge batcher on a manual clock: when batches go (idle, full, timeout), that each
 * request gets exactly its own part, that a request past its deadline leaves its batch alone,
 * and that a failed job fails every request in it once. `dispatch` here is the seam the
 * service fills with a real BullMQ job; these tests answer it by hand.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../core/batching/clock.ts';
import { EdgeBatcher, type EdgeAnswer, type EdgeBatch } from '../../../core/batching/edge-batcher.ts';
import type { NormalizedInput } from '../../../core/prediction/input.ts';
import type { SyncReply } from '../../../core/prediction/record.ts';

const row = (v: number): NormalizedInput => ({
  kind: 'tensors',
  tensors: [{ name: 'x', datatype: 'FP32', shape: [1, 2], data: Float32Array.of(v, v) }],
});
const LIMITS = { maxRows: 8, maxDelayMs: 2 };

interface Sent {
  batch: EdgeBatch;
  resolve: (r: SyncReply) => void;
  reject: (e: Error) => void;
  abandoned: boolean;
}

function setup(maxInFlight = 2) {
  const clock = new ManualClock();
  const sent: Sent[] = [];
  const edge = new EdgeBatcher({
    clock,
    maxInFlight,
    epochNow: () => clock.now(),
    dispatch: (batch) => {
      let resolve!: (r: SyncReply) => void;
      let reject!: (e: Error) => void;
      const reply = new Promise<SyncReply>((res, rej) => ((resolve = res), (reject = rej)));
      const s: Sent = { batch, resolve, reject, abandoned: false };
      sent.push(s);
      return { reply, abandon: () => ((s.abandoned = true), reject(new Error('abandoned'))) };
    },
  });
  /** Answers a sent batch: each segment's part names the first value of its rows. */
  const answer = (s: Sent, failRow?: number) =>
    s.resolve({
      id: 'job',
      status: 'COMPLETED',
      queueMs: 1,
      inferenceMs: 2,
      batchRows: s.batch.rows,
      parts: s.batch.segments.map((_, i) => {
        const first = (s.batch.input as Extract<NormalizedInput, { kind: 'tensors' }>).tensors[0].data[
          2 * s.batch.segments.slice(0, i).reduce((a, b) => a + b, 0)
        ];
        return first === failRow
          ? { predictions: [], outputs: [], error: { code: 'NON_FINITE_OUTPUT' as const, message: 'inf' } }
          : { predictions: [{ label: String(first), score: 1, probabilities: null }], outputs: [] };
      }),
    });
  const submit = (v: number, timeoutMs = 1000) => {
    const p = edge.submit('m@1', LIMITS, row(v), 1, timeoutMs, `req-${v}`);
    const out: { value?: EdgeAnswer; error?: Error } = {};
    p.then(
      (a) => (out.value = a),
      (e: Error) => (out.error = e),
    );
    return out;
  };
  return { clock, sent, edge, answer, submit };
}

const flush = () => new Promise((r) => setImmediate(r));
const labelOf = (o: { value?: EdgeAnswer }) => o.value?.part.predictions[0]?.label;

describe('edge batcher', () => {
  it('sends a lone request at once (no wait for company when nothing is in flight)', async () => {
    const { sent, answer, submit } = setup();
    const a = submit(1);
    expect(sent).toHaveLength(1);
    expect(sent[0].batch).toMatchObject({ rows: 1, segments: [1], requestIds: ['req-1'], reason: 'idle' });
    answer(sent[0]);
    await flush();
    expect(labelOf(a)).toBe('1');
  });

  it('under load, gathers while batches are out and sends what gathered when one comes back', async () => {
    const { sent, answer, submit } = setup(2);
    const first = [submit(1), submit(2)];
    const waiting = [submit(3), submit(4), submit(5)];
    expect(sent.map((s) => s.batch.rows)).toEqual([1, 1]);
    answer(sent[0]);
    await flush();
    expect(sent).toHaveLength(3);
    expect(sent[2].batch).toMatchObject({ rows: 3, segments: [1, 1, 1], requestIds: ['req-3', 'req-4', 'req-5'], reason: 'idle' });
    answer(sent[1]);
    answer(sent[2]);
    await flush();
    expect([...first, ...waiting].map(labelOf)).toEqual(['1', '2', '3', '4', '5']);
  });

  it('sends a full batch at once, and after the edge delay what has waited that long', async () => {
    const { clock, sent, submit } = setup(1);
    submit(0);
    for (let v = 1; v <= 8; v++) submit(v);
    expect(sent.map((s) => [s.batch.rows, s.batch.reason])).toEqual([
      [1, 'idle'],
      [8, 'full'],
    ]);
    submit(9);
    expect(sent).toHaveLength(2);
    clock.advance(2);
    expect(sent.map((s) => s.batch.reason)).toEqual(['idle', 'full', 'timeout']);
  });

  it('a request whose deadline passes while its batch gathers leaves it; the others are sent and answered', async () => {
    const { clock, sent, answer, submit } = setup(1);
    submit(0);
    const late = submit(1, 1);
    const fine = submit(2);
    clock.advance(1);
    await flush();
    expect(late.error?.message).toMatch(/no result within 1 ms/);
    clock.advance(1);
    expect(sent[1].batch).toMatchObject({ rows: 1, requestIds: ['req-2'] });
    answer(sent[1]);
    await flush();
    expect(labelOf(fine)).toBe('2');
  });

  it('a request whose deadline passes while its batch runs gets DEADLINE_EXCEEDED; the rest of the batch is answered', async () => {
    const { clock, sent, answer, submit } = setup(1);
    submit(0);
    const short = submit(1, 5);
    const long = submit(2);
    answer(sent[0]);
    await flush();
    expect(sent[1].batch.segments).toEqual([1, 1]);
    clock.advance(5);
    await flush();
    expect((short.error as { code?: string }).code).toBe('DEADLINE_EXCEEDED');
    expect(sent[1].abandoned).toBe(false);
    answer(sent[1]);
    await flush();
    expect(labelOf(long)).toBe('2');
    expect(short.value).toBeUndefined();
  });

  it('a batch whose requests have all left is abandoned, and the group moves on', async () => {
    const { clock, sent, submit } = setup(1);
    submit(0, 3);
    clock.advance(3);
    await flush();
    expect(sent[0].abandoned).toBe(true);
    submit(1);
    expect(sent).toHaveLength(2);
  });

  it('a part that failed fails its request alone; a failed job fails each of its requests once, with its code', async () => {
    const { sent, answer, submit } = setup(1);
    submit(0);
    const batch = [submit(1), submit(2), submit(3)];
    answer(sent[0]);
    await flush();
    answer(sent[1], 2);
    await flush();
    expect(batch.map((o) => labelOf(o) ?? (o.error as { code?: string }).code)).toEqual(['1', 'NON_FINITE_OUTPUT', '3']);

    submit(6);
    const again = [submit(4), submit(5)];
    answer(sent[sent.length - 1]);
    await flush();
    const last = sent[sent.length - 1];
    expect(last.batch.requestIds).toEqual(['req-4', 'req-5']);
    last.resolve({
      id: 'job',
      status: 'FAILED',
      error: { code: 'INFERENCE_FAILED', message: 'boom' },
      queueMs: 0,
      inferenceMs: 0,
      batchRows: 0,
    });
    await flush();
    expect(again.map((o) => (o.error as { code?: string }).code)).toEqual(['INFERENCE_FAILED', 'INFERENCE_FAILED']);
  });

  it('a reply the API cannot use (no part for a request, or not a reply at all) is 502 BAD_GATEWAY naming the model', async () => {
    const { sent, submit } = setup(1);
    const a = submit(1);
    sent[0].resolve({ id: 'job', status: 'COMPLETED', queueMs: 0, inferenceMs: 0, batchRows: 1, parts: [] });
    await flush();
    expect(a.error).toMatchObject({ code: 'BAD_GATEWAY', status: 502, message: expect.stringContaining('m@1') });
    const b = submit(2);
    sent[1].resolve('not a reply' as unknown as SyncReply);
    await flush();
    expect(b.error).toMatchObject({ code: 'BAD_GATEWAY', message: expect.stringMatching(/reply for m@1 could not be read/) });
  });

  it('rows of different shapes never share a batch', () => {
    const { sent, edge } = setup(1);
    void edge.submit('m@1', LIMITS, row(1), 1, 1000, 'a');
    void edge.submit(
      'm@1',
      LIMITS,
      { kind: 'tensors', tensors: [{ name: 'x', datatype: 'FP32', shape: [1, 3], data: Float32Array.of(1, 1, 1) }] },
      1,
      1000,
      'b',
    );
    expect(sent.map((s) => s.batch.group)).toEqual(['m@1#x:FP32:2', 'm@1#x:FP32:3']);
  });
});
