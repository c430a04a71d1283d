/**
 * Which lanes a worker consumes under `queue.placement: model` (docs/RESIDENCY.md). A lane is
 * one shard of the pool's queue; every job of a model version goes to the lane its key hashes
 * to (`placedId`, core/prediction/record.ts). Each lane ranks the pool's live workers by a
 * hash of (worker, lane) — rendezvous hashing: every process that sees the same live workers
 * ranks them the same, and a worker coming or going moves only its own lanes. The first is
 * the lane's owner; a lane with more jobs waiting than one worker takes at once (`perWorker`,
 * its concurrency) gets the next in rank too, one more worker per `perWorker` waiting, up to
 * every live worker. So a version is loaded by the one worker whose lane it is, and a hot one
 * by as many as its backlog asks for.
 */
import { shardOf } from '../prediction/queues.ts';

/** The rank of `worker` for `lane`: higher first. */
function score(worker: string, lane: number): number {
  return shardOf(`${worker}#${lane}`, 0x7fffffff);
}

/** How many workers a lane with `waiting` jobs gets: 1, plus one per `perWorker` waiting. */
export function workersFor(waiting: number, perWorker: number, alive: number): number {
  return Math.max(1, Math.min(alive, 1 + Math.floor(waiting / Math.max(1, perWorker))));
}

/** The workers of `lane`, in rank order, as many as its backlog asks for. */
export function laneWorkers(lane: number, alive: readonly string[], waiting: number, perWorker: number): string[] {
  const ranked = [...alive].sort((a, b) => score(b, lane) - score(a, lane) || (a < b ? -1 : 1));
  return ranked.slice(0, workersFor(waiting, perWorker, ranked.length));
}

/** The lanes `self` consumes, given the pool's live workers (self among them) and each lane's waiting jobs. */
export function ownedLanes(self: string, alive: readonly string[], waiting: readonly number[], perWorker: number): number[] {
  const everyone = alive.includes(self) ? alive : [...alive, self];
  return waiting.flatMap((w, lane) => (laneWorkers(lane, everyone, w, perWorker).includes(self) ? [lane] : []));
}
