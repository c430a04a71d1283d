/**
 * Which lanes a worker consumes under `queue.placement: model` (docs/RESIDENCY.md). A lane is
 * one shard of the pool's queue; every job of a model version goes to the lane its key hashes
 * to (`placedId`, core/prediction/record.ts). Every worker computes the same answer from the
 * same registry (the pool's live workers, what each holds in memory, its free budget and its
 * load), so they agree without talking:
 *
 * - a lane one or more live workers hold a version of (resident) stays with them: its
 *   holders rank first, among themselves by a hash of (worker, lane) — rendezvous hashing;
 * - a cold lane (nobody holds a version of it) ranks the workers by *weighted* rendezvous
 *   hashing, score = -ln(hash) / weight, the weight growing with the worker's free model
 *   budget and shrinking with its load (`weightOf`): a cold version tends to go where there is
 *   room and time for it, spread in proportion (not all to the emptiest worker), and a worker
 *   coming or going still moves only its own lanes, since the others' scores do not change.
 *
 * The first in rank owns the lane; a lane with more jobs waiting than one worker takes at once
 * (`perWorker`, its concurrency) gets the next in rank too, one more worker per `perWorker`
 * waiting, up to every live worker. So a version is loaded by the one worker whose lane it is,
 * and a hot one by as many as its backlog asks for.
 */
import { shardOf } from '../prediction/queues.ts';

/** A live worker as the lane rule sees it: its id, what it holds and how much room and load it has. */
export interface LaneWorker {
  id: string;
  /** Weighted rendezvous weight for cold lanes (`weightOf`); 1 when not given. */
  weight?: number;
  /** The lanes it holds a resident version of. */
  holds?: readonly number[];
}

/** Free budget counts in steps of this share of the largest budget, so small measurement changes move no lane. */
const FREE_STEPS = 16;

/**
 * The weight of a worker for cold lanes: 1 + its free model budget in sixteenths of the largest
 * budget among the pool's live workers (`budgetBytes - usedBytes`; a worker without a budget
 * counts as all free), divided by 1 + its load in halves of its concurrency (0 idle, 1 half
 * busy or more, 2 saturated). Both are in coarse steps: the registry changes them only on a
 * load, an eviction or a heartbeat, and a step must be crossed to move a lane.
 */
export function weightOf(
  residency: { budgetBytes: number | null; usedBytes: number } | undefined,
  largestBudget: number,
  load?: { inHand: number; concurrency: number },
): number {
  const budget = residency?.budgetBytes ?? null;
  const free =
    budget === null || largestBudget <= 0
      ? FREE_STEPS
      : Math.floor((FREE_STEPS * Math.max(0, budget - residency!.usedBytes)) / largestBudget);
  const busy = load && load.concurrency > 0 ? Math.min(2, Math.floor((2 * load.inHand) / load.concurrency)) : 0;
  return (1 + Math.min(FREE_STEPS, free)) / (1 + busy);
}

/**
 * A hash of (worker, lane) in (0, 1]: FNV-1a, then murmur3's finaliser, since ids that differ
 * in one character leave FNV-1a's high bits correlated across lanes, and the weighted score
 * reads the whole value, not just its rank.
 */
function unit(worker: string, lane: number): number {
  let h = shardOf(`${worker}#${lane}`, 0x100000000);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h = (h ^ (h >>> 16)) >>> 0;
  return (h + 1) / 0x100000000;
}

/** Weighted rendezvous score of `w` for `lane`: lower first. With equal weights, the plain rendezvous order. */
function score(w: LaneWorker, lane: number): number {
  return -Math.log(unit(w.id, lane)) / (w.weight ?? 1);
}

/** How many workers a lane with `waiting` jobs gets: 1, plus one per `perWorker` waiting. */
export function workersFor(waiting: number, perWorker: number, alive: number): number {
  return Math.max(1, Math.min(alive, 1 + Math.floor(waiting / Math.max(1, perWorker))));
}

const view = (w: string | LaneWorker): LaneWorker => (typeof w === 'string' ? { id: w } : w);

/**
 * The workers of `lane`, in rank order, as many as its backlog asks for; with `starved` (the
 * lane's next job has waited past {@link STARVED_MS}: its workers take nothing, dead but not
 * yet expired from the registry, or busy), one more.
 */
export function laneWorkers(
  lane: number,
  alive: readonly (string | LaneWorker)[],
  waiting: number,
  perWorker: number,
  starved = false,
): string[] {
  const all = alive.map(view);
  const holders = all.filter((w) => w.holds?.includes(lane));
  const holding = new Set(holders.map((w) => w.id));
  const tie = (a: LaneWorker, b: LaneWorker): number => (a.id < b.id ? -1 : 1);
  // Holders among themselves by the plain hash (their load does not move a lane they hold), then the rest by weight.
  const ranked = [
    ...holders.sort((a, b) => score({ id: a.id }, lane) - score({ id: b.id }, lane) || tie(a, b)),
    ...all.filter((w) => !holding.has(w.id)).sort((a, b) => score(a, lane) - score(b, lane) || tie(a, b)),
  ];
  return ranked.slice(0, Math.min(ranked.length, workersFor(waiting, perWorker, ranked.length) + (starved ? 1 : 0))).map((w) => w.id);
}

/**
 * The lanes `self` consumes, given the pool's live workers (self among them), each lane's
 * waiting jobs, and the lanes found starved (`StarvedLanes`).
 */
export function ownedLanes(
  self: string,
  alive: readonly (string | LaneWorker)[],
  waiting: readonly number[],
  perWorker: number,
  starved: ReadonlySet<number> = new Set(),
): number[] {
  const everyone = alive.some((w) => view(w).id === self) ? alive : [...alive, self];
  return waiting.flatMap((w, lane) => (laneWorkers(lane, everyone, w, perWorker, starved.has(lane)).includes(self) ? [lane] : []));
}

/**
 * How long a lane's next job (the head of its queue) may stay the same before the lane counts
 * as starved and the next worker in its rank joins it: a SIGKILLed owner stays in the registry
 * until its entry expires (15 s), and this takes its lanes over sooner.
 */
export const STARVED_MS = 3_000;

/**
 * Watches each lane's next job: a lane whose head has not changed for {@link STARVED_MS}
 * while jobs wait is starved, and stays so until it has no job waiting. Every worker watches
 * the same queues, so they agree within a placement round; the rule only adds the next
 * worker in rank, so a round of disagreement costs nothing but a round.
 */
export class StarvedLanes {
  private readonly heads = new Map<number, { id: string; since: number }>();
  private readonly starved = new Set<number>();

  /** Records lane `lane`'s head (`undefined`: nothing waits) at `now`; returns the lanes starved now. */
  observe(lane: number, head: string | undefined, now: number): ReadonlySet<number> {
    if (head === undefined) {
      this.heads.delete(lane);
      this.starved.delete(lane);
      return this.starved;
    }
    const seen = this.heads.get(lane);
    if (!seen || seen.id !== head) this.heads.set(lane, { id: head, since: now });
    else if (now - seen.since >= STARVED_MS) this.starved.add(lane);
    return this.starved;
  }

  get lanes(): ReadonlySet<number> {
    return this.starved;
  }
}

/**
 * The lane rule's view of the pool's registry entries: each worker's weight (`weightOf`, against
 * the largest budget among them) and the lanes of its resident versions (out of `lanes`).
 */
export function laneWorkersOf(
  entries: readonly {
    id: string;
    residency?: { budgetBytes: number | null; usedBytes: number; resident: readonly { key: string }[] };
    jobs?: { inHand: number; concurrency: number };
  }[],
  lanes: number,
): LaneWorker[] {
  const largest = Math.max(0, ...entries.map((e) => e.residency?.budgetBytes ?? 0));
  return entries.map((e) => ({
    id: e.id,
    weight: weightOf(e.residency, largest, e.jobs),
    holds: [...new Set((e.residency?.resident ?? []).map((r) => shardOf(r.key, lanes)))],
  }));
}
