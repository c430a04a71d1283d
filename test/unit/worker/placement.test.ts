/**
 * The lane rule of `queue.placement: model` (core/worker/placement.ts): every lane has exactly
 * one owner when nothing waits, all processes that see the same workers agree, a worker
 * leaving moves only its own lanes, and a backlog adds workers one per `perWorker` waiting.
 */
import { describe, expect, it } from 'vitest';
import {
  laneWorkers,
  laneWorkersOf,
  ownedLanes,
  StarvedLanes,
  STARVED_MS,
  weightOf,
  workersFor,
  type LaneWorker,
} from '../../../core/worker/placement.ts';
import { shardOf } from '../../../core/prediction/queues.ts';

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

const MiB = 1024 * 1024;
const entry = (id: string, usedMiB: number, resident: string[] = [], inHand = 0) => ({
  id,
  residency: { budgetBytes: 256 * MiB, usedBytes: usedMiB * MiB, resident: resident.map((key) => ({ key })) },
  jobs: { inHand, concurrency: 4 },
});
const ownersOf = (pool: LaneWorker[], lanes: number): string[] => Array.from({ length: lanes }, (_, l) => laneWorkers(l, pool, 0, 4)[0]);
const countOf = (owners: string[], id: string): number => owners.filter((o) => o === id).length;

describe('load-aware owner choice', () => {
  it('weighs a worker by its free budget in sixteenths of the largest budget, and by its load in halves of its concurrency', () => {
    expect(weightOf({ budgetBytes: 256 * MiB, usedBytes: 0 }, 256 * MiB)).toBe(17);
    expect(weightOf({ budgetBytes: 256 * MiB, usedBytes: 256 * MiB }, 256 * MiB)).toBe(1);
    expect(weightOf({ budgetBytes: 256 * MiB, usedBytes: 300 * MiB }, 256 * MiB)).toBe(1);
    expect(weightOf({ budgetBytes: 128 * MiB, usedBytes: 0 }, 256 * MiB)).toBe(9);
    expect(weightOf({ budgetBytes: 256 * MiB, usedBytes: 3 * MiB }, 256 * MiB)).toBe(16);
    // Without a budget every version is loaded: it counts as all free.
    expect(weightOf({ budgetBytes: null, usedBytes: 10 * MiB }, 0)).toBe(17);
    expect(weightOf(undefined, 256 * MiB)).toBe(17);
    expect(weightOf({ budgetBytes: 256 * MiB, usedBytes: 0 }, 256 * MiB, { inHand: 1, concurrency: 4 })).toBe(17);
    expect(weightOf({ budgetBytes: 256 * MiB, usedBytes: 0 }, 256 * MiB, { inHand: 2, concurrency: 4 })).toBe(17 / 2);
    expect(weightOf({ budgetBytes: 256 * MiB, usedBytes: 0 }, 256 * MiB, { inHand: 4, concurrency: 4 })).toBe(17 / 3);
  });

  it('gives most cold lanes to the worker with the most free budget, not one in four', () => {
    const lanes = 64;
    const pool = laneWorkersOf([entry('w-a', 250), entry('w-b', 250), entry('w-c', 0), entry('w-d', 250)], lanes);
    const owners = ownersOf(pool, lanes);
    // Weights 1, 1, 17, 1: the empty worker's expected share is 17/20 of the cold lanes.
    expect(countOf(owners, 'w-c')).toBeGreaterThan(lanes / 2);
    // Spread in proportion, not all to it.
    expect(countOf(owners, 'w-c')).toBeLessThan(lanes);
    // Plain rendezvous (equal weights) would have given it about a quarter.
    expect(
      countOf(
        ownersOf(
          workers.map((id) => ({ id })),
          lanes,
        ),
        'w-c',
      ),
    ).toBeLessThan(lanes / 2);
  });

  it('with equal free budgets, gives the less loaded worker more cold lanes', () => {
    const lanes = 64;
    const owners = ownersOf(laneWorkersOf([entry('w-a', 0, [], 4), entry('w-b', 0, [], 0)], lanes), lanes);
    expect(countOf(owners, 'w-b')).toBeGreaterThan(countOf(owners, 'w-a'));
  });

  it('keeps a lane with a resident holder on that holder, however full or busy it is', () => {
    const lanes = 8;
    const key = 'lin3@1';
    const lane = shardOf(key, lanes);
    const pool = laneWorkersOf([entry('w-a', 0), entry('w-b', 256, [key], 4), entry('w-c', 0)], lanes);
    expect(pool.find((w) => w.id === 'w-b')!.holds).toEqual([lane]);
    expect(laneWorkers(lane, pool, 0, 4)).toEqual(['w-b']);
    // Its backlog adds the others after it.
    expect(laneWorkers(lane, pool, 1000, 4)[0]).toBe('w-b');
    // Two holders (a version pinned, or loaded by a helper during a backlog): one of them, by the plain hash.
    const two = laneWorkersOf([entry('w-a', 0), entry('w-b', 256, [key]), entry('w-c', 256, [key])], lanes);
    expect(['w-b', 'w-c']).toContain(laneWorkers(lane, two, 0, 4)[0]);
    expect(laneWorkers(lane, two, 4, 4).sort()).toEqual(['w-b', 'w-c']);
  });

  it('agrees whoever computes it: every idle lane has exactly one owner, whatever order the registry lists', () => {
    const lanes = 32;
    const entries = [entry('w-a', 100, ['lin0@1']), entry('w-b', 250, ['lin1@1', 'lin2@1'], 3), entry('w-c', 0), entry('w-d', 30, [], 1)];
    const pool = laneWorkersOf(entries, lanes);
    const owned = pool.map((w) => ownedLanes(w.id, pool, idle(lanes), 4));
    expect(owned.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: lanes }, (_, i) => i));
    const reversed = laneWorkersOf([...entries].reverse(), lanes);
    expect(pool.map((w) => ownedLanes(w.id, reversed, idle(lanes), 4))).toEqual(owned);
  });

  it('a worker leaving moves only its own lanes, weights and holders as they were', () => {
    const lanes = 64;
    const entries = [entry('w-a', 100, ['lin0@1']), entry('w-b', 250, ['lin1@1']), entry('w-c', 0), entry('w-d', 30, ['lin5@1'])];
    const before = ownersOf(laneWorkersOf(entries, lanes), lanes);
    const after = ownersOf(
      laneWorkersOf(
        entries.filter((e) => e.id !== 'w-c'),
        lanes,
      ),
      lanes,
    );
    for (let l = 0; l < lanes; l++) {
      if (before[l] !== 'w-c') expect(after[l]).toBe(before[l]);
      else expect(after[l]).not.toBe('w-c');
    }
    expect(countOf(before, 'w-c')).toBeGreaterThan(0);
  });
});

describe('starved lanes (a dead owner not yet expired)', () => {
  it('a lane whose next job has not moved for STARVED_MS is starved until nothing waits in it', () => {
    const s = new StarvedLanes();
    expect([...s.observe(2, 'job-1', 0)]).toEqual([]);
    expect([...s.observe(2, 'job-1', STARVED_MS - 1)]).toEqual([]);
    // Its head moved: someone takes from it.
    expect([...s.observe(2, 'job-2', STARVED_MS)]).toEqual([]);
    expect([...s.observe(2, 'job-2', 2 * STARVED_MS)]).toEqual([2]);
    // Stays starved while jobs wait, moving or not (its helper is taking them).
    expect([...s.observe(2, 'job-3', 2 * STARVED_MS + 1)]).toEqual([2]);
    expect([...s.observe(2, undefined, 2 * STARVED_MS + 2)]).toEqual([]);
    expect([...s.observe(2, 'job-4', 3 * STARVED_MS)]).toEqual([]);
  });

  it('a starved lane gets the next worker in rank besides its owner', () => {
    const lanes = 8;
    for (let lane = 0; lane < lanes; lane++) {
      const ranked = laneWorkers(lane, workers, 1000, 4);
      expect(laneWorkers(lane, workers, 0, 4, true)).toEqual(ranked.slice(0, 2));
      expect(laneWorkers(lane, workers, 4, 4, true)).toEqual(ranked.slice(0, 3));
      expect(ownedLanes(ranked[1], workers, idle(lanes), 4, new Set([lane]))).toContain(lane);
      expect(ownedLanes(ranked[1], workers, idle(lanes), 4)).not.toContain(lane);
    }
    // Never more than the live workers.
    expect(laneWorkers(0, ['w-a'], 0, 4, true)).toEqual(['w-a']);
  });
});
