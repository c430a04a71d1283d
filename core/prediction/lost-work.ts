/**
 * Work that Redis lost: a QUEUED record whose job is in no queue. Redis replicates
 * asynchronously, so a master that dies takes with it what it acknowledged but had not copied
 * to its replica yet. batchline waits for a replica before it acknowledges a job or a result
 * on a cluster (core/redis/cluster.ts), which closes that window for acknowledged work; when
 * the replica is down too, or the write raced the failover, the job can still be gone. Its
 * record would then say QUEUED forever and its subscribers wait forever. This check ends such
 * a record FAILED with WORK_LOST instead: a stated failure the client can act on (submit again).
 *
 * Exactly once: the failure goes through the finish-once script, so a worker that finishes the
 * job meanwhile wins or loses the race cleanly, and nobody hears two answers.
 */
import { ServingError } from '../errors/registry.ts';
import type { PredictionQueues } from './queues.ts';
import type { ResultStore } from './result-store.ts';
import { lost, type PredictionRecord } from './record.ts';

/**
 * How old a QUEUED record must be before a missing job counts as lost: longer than any
 * enqueue can take (admission, add and replica wait, each retried ~3 s at most through a
 * failover), so a job still on its way in is never mistaken for a lost one.
 */
export const LOST_WORK_GRACE_MS = 10_000;

export class LostWork {
  private readonly queues: PredictionQueues;
  private readonly store: ResultStore;
  private readonly graceMs: number;

  constructor(queues: PredictionQueues, store: ResultStore, graceMs = LOST_WORK_GRACE_MS) {
    this.queues = queues;
    this.store = store;
    this.graceMs = graceMs;
  }

  /** Whether `rec` is old enough that its job must be in a queue if it was not lost. */
  due(rec: PredictionRecord, now = Date.now()): boolean {
    return rec.status === 'QUEUED' && now - rec.submittedAt >= this.graceMs;
  }

  /**
   * For a QUEUED record past the grace period whose job is gone: writes its WORK_LOST failure
   * and returns the record as it now stands (that failure, or what a worker wrote first).
   * Undefined when the job is still there (or the record is not due).
   */
  async settle(rec: PredictionRecord): Promise<PredictionRecord | undefined> {
    if (!this.due(rec)) return undefined;
    if (await this.queues.getJob(rec.pool, rec.job ?? rec.id)) return undefined;
    const failure = lost(
      rec,
      new ServingError('WORK_LOST', 'the work was lost with a Redis node before it was answered; submit it again').toJSON(),
    );
    // A worker may have finished and removed its job since the record was read: finish-once keeps its answer.
    return (await this.store.finish(failure)) ? failure : await this.store.get(rec.id);
  }
}
