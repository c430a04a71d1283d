/**
 * Replicas for a pool's expected peak (`autoscaling.expectedRate`), from the simulator
 * (core/simulation/capacity.ts, as `batchline plan capacity`): the pool's own batching
 * configuration, its slowest model's SLO as the p99 to hold, and the named profile's run
 * times for each slot. `k8s explain` prints it; `k8s render` warns when maxReplicas is below it.
 */
import { isAbsolute, join } from 'node:path';
import type { PoolName } from '../core/config/settings.ts';
import type { BatchingSpec } from '../core/models/config.ts';
import { batchingPlan, withBatchingDefaults } from '../core/batching/plan.ts';
import { planCapacity, type CapacityPlan } from '../core/simulation/capacity.ts';
import { loadProfile } from '../core/simulation/service.ts';
import type { PoolSizing } from './plan.ts';

export interface ReplicaSuggestion {
  requestsPerSecond: number;
  profile: string;
  plan: CapacityPlan;
}

/**
 * What the pool's worker runs (core/batching/plan.ts): the policy and delay of its first model
 * that states batching, the pool's batch limit and its slowest SLO.
 */
function poolBatching(p: PoolSizing): BatchingSpec {
  const first = withBatchingDefaults(p.models.find((m) => m.batching)?.batching);
  return { ...batchingPlan(p.pool, { batching: first }).worker, maxBatchSize: p.batchSize, sloMs: p.sloMs };
}

/**
 * Simulates every pool that states an expected rate. Profiles are read relative to `baseDir`
 * (the resource file's folder).
 * @throws naming the field, when a profile cannot be read
 */
export async function suggestReplicas(
  loaded: { pools: PoolSizing[] },
  baseDir: string,
): Promise<Partial<Record<PoolName, ReplicaSuggestion>>> {
  const out: Partial<Record<PoolName, ReplicaSuggestion>> = {};
  for (const p of loaded.pools) {
    const expected = p.spec.autoscaling.expectedRate;
    if (!expected) continue;
    const file = isAbsolute(expected.profile) ? expected.profile : join(baseDir, expected.profile);
    let profile;
    try {
      profile = loadProfile(file);
    } catch (e) {
      throw new Error(`spec.pools.${p.pool}.autoscaling.expectedRate.profile: ${(e as Error).message}`);
    }
    // A GPU's slots are its GPUs (runs on one CUDA session serialize); a CPU replica runs the slots its sizing gave it.
    const slotsPerReplica = p.pool === 'gpu' ? Math.max(1, p.limits.gpus) * profile.slotsPerReplica : p.plan.slots;
    const plan = await planCapacity({
      profile,
      ratePerSec: expected.requestsPerSecond,
      sloMs: p.sloMs,
      policy: poolBatching(p).policy,
      batching: poolBatching(p),
      slotsPerReplica,
    });
    out[p.pool] = { requestsPerSecond: expected.requestsPerSecond, profile: profile.name, plan };
  }
  return out;
}

/** The explain line for a pool's suggestion. */
export function suggestionText(s: ReplicaSuggestion, maxReplicas: number): string {
  const { plan } = s;
  const verdict =
    plan.replicas <= maxReplicas
      ? `maxReplicas ${maxReplicas} covers it`
      : `maxReplicas ${maxReplicas} is below it: raise it to ${plan.replicas}`;
  return (
    `${s.requestsPerSecond} requests/s (profile ${s.profile}): ${plan.replicas} replica${plan.replicas === 1 ? '' : 's'} of ${plan.slotsPerReplica} slot${plan.slotsPerReplica === 1 ? '' : 's'} ` +
    `hold it at p99 ${plan.atSize.p99.toFixed(1)} ms, queueing p99 ${plan.atSize.waitMs.p99.toFixed(1)} ms (simulated, ${plan.perReplicaPerSec.toFixed(0)} requests/s a replica); ${verdict}`
  );
}
