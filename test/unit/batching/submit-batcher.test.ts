/**
 * The submit batcher on a manual clock: a quiet group sends at once (no added wait); while a
 * send is on its way the next submissions gather, and go when it comes back, when they fill the
 * row limit, or at the delay; each submission gets its own outcome; groups never mix.
 * `dispatch` is the seam core/api/tickets.ts fills with Redis work; these tests answer it by hand.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../core/batching/clock.ts';
import { SubmitBatcher, type GatheredOutcome } from '../../../core/batching/submit-batcher.ts';
import { selectRows } from '../../../core/batching/merge.ts';

interface Sent {
  group: string;
  items: number[];
  reason: string;
  answer: (outcomes: GatheredOutcome<string>[]) => void;
  fail: (e: Error) => void;
}

function setup() {
  const clock = new ManualClock();
  const sent: Sent[] = [];
  const batcher = new SubmitBatcher<number, string>({
    clock,
    dispatch: (group, items, reason) =>
      new Promise((answer, fail) => {
        sent.push({ group, items, reason, answer, fail });
      }),
  });
  return { clock, sent, batcher };
}
const LIMITS = { maxRows: 4, maxDelayMs: 2 };
const okAll = (s: Sent): void => s.answer(s.items.map((i) => ({ ok: true, value: `ticket-${i}` })));
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('SubmitBatcher', () => {
  it('sends a submission of a quiet group at once, alone', async () => {
    const { sent, batcher } = setup();
    const t = batcher.submit('g', LIMITS, 1, 1);
    expect(sent.map((s) => [s.items, s.reason])).toEqual([[[1], 'idle']]);
    okAll(sent[0]);
    expect(await t).toBe('ticket-1');
  });

  it('gathers what arrives while a send is on its way, and sends it when that send comes back', async () => {
    const { sent, batcher } = setup();
    const all = [1, 2, 3].map((i) => batcher.submit('g', LIMITS, 1, i));
    expect(sent.map((s) => s.items)).toEqual([[1]]);
    okAll(sent[0]);
    await tick();
    expect(sent.map((s) => [s.items, s.reason])).toEqual([
      [[1], 'idle'],
      [[2, 3], 'idle'],
    ]);
    okAll(sent[1]);
    expect(await Promise.all(all)).toEqual(['ticket-1', 'ticket-2', 'ticket-3']);
  });

  it('sends a gathering group when it fills its row limit, or at its delay', async () => {
    const { clock, sent, batcher } = setup();
    void batcher.submit('g', LIMITS, 1, 0);
    for (let i = 1; i <= 5; i++) void batcher.submit('g', LIMITS, 1, i);
    // Rows 1-4 filled the limit; 5 waits.
    expect(sent.map((s) => [s.items, s.reason])).toEqual([
      [[0], 'idle'],
      [[1, 2, 3, 4], 'full'],
    ]);
    clock.advance(2);
    expect(sent.map((s) => [s.items, s.reason])[2]).toEqual([[5], 'timeout']);
  });

  it('gives each submission its own outcome, and fails all of a send that failed', async () => {
    const { sent, batcher } = setup();
    void batcher.submit('g', LIMITS, 1, 0);
    const a = batcher.submit('g', LIMITS, 1, 1);
    const b = batcher.submit('g', LIMITS, 1, 2);
    okAll(sent[0]);
    await tick();
    sent[1].answer([
      { ok: true, value: 'ticket-1' },
      { ok: false, error: new Error('QUEUE_FULL') },
    ]);
    expect(await a).toBe('ticket-1');
    await expect(b).rejects.toThrow('QUEUE_FULL');
    const c = batcher.submit('g', LIMITS, 1, 3);
    sent[2].fail(new Error('redis down'));
    await expect(c).rejects.toThrow('redis down');
  });

  it('never mixes groups (model, shape, priority)', () => {
    const { sent, batcher } = setup();
    void batcher.submit('a', LIMITS, 1, 1);
    void batcher.submit('b', LIMITS, 1, 2);
    expect(sent.map((s) => [s.group, s.items])).toEqual([
      ['a', [1]],
      ['b', [2]],
    ]);
  });
});

describe('selectRows', () => {
  it('keeps the rows of the ranges given, in order, for tensors and texts', () => {
    const input = {
      kind: 'tensors' as const,
      tensors: [{ name: 'x', datatype: 'FP32' as const, shape: [4, 2], data: Float32Array.of(0, 0, 1, 1, 2, 2, 3, 3) }],
    };
    const out = selectRows(input, [
      { start: 0, rows: 1 },
      { start: 2, rows: 2 },
    ]);
    expect(out.kind === 'tensors' && out.tensors[0].shape).toEqual([3, 2]);
    expect(out.kind === 'tensors' && Array.from(out.tensors[0].data)).toEqual([0, 0, 2, 2, 3, 3]);
    expect(selectRows({ kind: 'text', texts: ['a', 'b', 'c'] }, [{ start: 1, rows: 2 }])).toEqual({ kind: 'text', texts: ['b', 'c'] });
  });
});
