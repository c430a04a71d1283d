/**
 * The lane rule of `queue.placement: model` (core/worker/placement.ts): every lane has exactly
 * one owner when nothing waits, all processes that see the same workers agree, a worker
 * leaving moves only its own lanes, and a backlog adds workers one per `perWorker` waiting.
 */
import { describe, expect, it } from 'vitest';
import { laneWorkers, ownedLanes, workersFor } from '../../../core/worker/placement.ts';

const workers = ['w-a', 'w-b', 'w-c', 'w-d'];
const idle = (lanes: number): number[] => Array.from({ length: lanes }, () => 0);

describe('lanes by model version', () => {
  it('gives every idle lane exactly one worker, the same whoever computes it', () => {
    const lanes = 16;
    const owners = workers.map((w) => ownedLanes(w, workers, idle(lanes), 4));
    expect(owners.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: lanes }, (_, i) => i));
    // The order a process lists the workers in does not matter.
    expect(ownedLanes('w-c', [...workers].reverse(), idle(lanes), 4)).toEqual(owners[2]);
  });

  it('moves only the leaving worker’s lanes', () => {
    const lanes = 32;
    const before = new Map(Array.from({ length: lanes }, (_, l) => [l, laneWorkers(l, workers, 0, 4)[0]]));
    const rest = workers.filter((w) => w !== 'w-b');
    for (let l = 0; l < lanes; l++) {
      const now = laneWorkers(l, rest, 0, 4)[0];
      if (before.get(l) !== 'w-b') expect(now).toBe(before.get(l));
      else expect(rest).toContain(now);
    }
  });

  it('adds one worker per perWorker jobs waiting, up to every live worker, in rank order', () => {
    expect(workersFor(0, 4, 4)).toBe(1);
    expect(workersFor(3, 4, 4)).toBe(1);
    expect(workersFor(4, 4, 4)).toBe(2);
    expect(workersFor(9, 4, 4)).toBe(3);
    expect(workersFor(1000, 4, 4)).toBe(4);
    const ranked = laneWorkers(5, workers, 1000, 4);
    expect(laneWorkers(5, workers, 4, 4)).toEqual(ranked.slice(0, 2));
    expect(ownedLanes(ranked[1], workers, [0, 0, 0, 0, 0, 4], 4)).toContain(5);
    expect(ownedLanes(ranked[2], workers, [0, 0, 0, 0, 0, 4], 4)).not.toContain(5);
  });

  it('a worker not yet in the registry counts itself in', () => {
    expect(ownedLanes('w-new', [], idle(3), 1)).toEqual([0, 1, 2]);
  });
});
