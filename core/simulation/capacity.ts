/**
 * Capacity planning from the simulation: how many worker replicas (and inference slots) hold a
 * target rate within the SLO. One replica is simulated with its own slots; the target rate is
 * taken to split evenly over the replicas, each seeing Poisson arrivals at its share (a random
 * split of a Poisson stream is Poisson). Replicas that pull from one shared queue, as BullMQ
 * workers do, pool their slack, so this errs on the side of one replica too many.
 */
import type { BatchingSpec } from '../models/config.ts';
import type { ArrivalPattern } from './arrivals.ts';
import { adaptive, label, type PolicyName } from './configurations.ts';
import { bestFixed, runSpec, sustainableRate, type Scenario } from './search.ts';
import { ServiceModel, type Profile } from './service.ts';
import { simulate, type SimulationResult } from './simulate.ts';

export interface CapacityRequest {
  profile: Profile;
  /** Target rate over all replicas, requests per second. */
  ratePerSec: number;
  sloMs: number;
  policy: PolicyName;
  /** The configuration to simulate as it is; left out, `fixed` is the best of the grid and aimd and predictive follow the SLO (configurations.ts). */
  batching?: BatchingSpec;
  /** @defaultValue the profile's slotsPerReplica */
  slotsPerReplica?: number;
  /** @defaultValue Poisson */
  pattern?: ArrivalPattern;
  maxRows?: number;
}

export interface CapacityPlan {
  policy: PolicyName;
  /** The configuration simulated. */
  batching: BatchingSpec;
  /** Most requests/s one replica holds within the SLO. */
  perReplicaPerSec: number;
  replicas: number;
  slots: number;
  slotsPerReplica: number;
  /** One replica at its share of the target rate. */
  atSize: Pick<SimulationResult, 'offeredPerSec' | 'p50' | 'p99' | 'waitMs' | 'withinSlo' | 'batchRows'>;
}

/** @throws when not even one request per second fits the SLO on one replica */
export async function planCapacity(req: CapacityRequest): Promise<CapacityPlan> {
  if (!(req.ratePerSec > 0)) throw new Error(`the target rate must be above 0 requests/s, got ${req.ratePerSec}`);
  if (!(req.sloMs > 0)) throw new Error(`the SLO must be above 0 ms, got ${req.sloMs}`);
  const slotsPerReplica = req.slotsPerReplica ?? req.profile.slotsPerReplica;
  const scenario: Scenario = {
    service: new ServiceModel(req.profile),
    slots: slotsPerReplica,
    pattern: req.pattern ?? { kind: 'poisson' },
    sloMs: req.sloMs,
    maxRows: req.maxRows,
  };
  let batching: BatchingSpec;
  let perReplica: number;
  if (req.batching) {
    batching = req.batching;
    perReplica = (await sustainableRate(scenario, batching)).ratePerSec;
  } else if (req.policy === 'fixed') {
    const { best } = await bestFixed(scenario);
    batching = best.batching;
    perReplica = best.sustained.ratePerSec;
  } else {
    batching = adaptive(req.policy, req.sloMs, req.profile.maxRows);
    perReplica = (await sustainableRate(scenario, batching)).ratePerSec;
  }
  if (!(perReplica > 0)) throw new Error(`${label(batching)}: one replica of ${req.profile.name} holds no rate within ${req.sloMs} ms`);
  // The search's verdict is monotone only as far as luck allows: check the size, and add a replica while it misses.
  for (let replicas = Math.max(1, Math.ceil(req.ratePerSec / perReplica)); ; replicas++) {
    const r = await simulate(runSpec(scenario, batching, req.ratePerSec / replicas));
    if (r.withinSlo || replicas > 2 * Math.ceil(req.ratePerSec / perReplica) + 1) {
      const { offeredPerSec, p50, p99, waitMs, withinSlo, batchRows } = r;
      return {
        policy: req.policy,
        batching,
        perReplicaPerSec: perReplica,
        replicas,
        slots: replicas * slotsPerReplica,
        slotsPerReplica,
        atSize: { offeredPerSec, p50, p99, waitMs, withinSlo, batchRows },
      };
    }
  }
}
