/**
 * The policies as the simulator compares them. The adaptive ones get one configuration each,
 * derived from the SLO alone by the rule below, the same for every profile and every load:
 * whatever they reach, they reach without hindsight. Fixed configurations are searched over
 * a grid for each scenario (search.ts), with hindsight.
 */
import type { BatchingSpec } from '../models/config.ts';

export type PolicyName = BatchingSpec['policy'];

/**
 * - aimd: its `sloMs` bounds one batch's run. Under load a request waits for the batch before
 *   its own (while its own gathers) and then for its own: about two runs. So a batch may take
 *   half the end-to-end SLO. (0.4 held batches too small on the measured CPU profile, whose
 *   runs jitter by a third: AIMD backs off on every slow run.)
 * - predictive: its `sloMs` is each request's deadline, from arrival: the end-to-end SLO.
 * - Both may grow to the profile's largest batch, and wait up to half the SLO for a slot
 *   before a gathering batch closes (`maxDelayMs`; the deadline closes it sooner when needed).
 */
export function adaptive(policy: Exclude<PolicyName, 'fixed'>, sloMs: number, maxRows: number): BatchingSpec {
  return { policy, maxBatchSize: maxRows, maxDelayMs: sloMs / 2, sloMs: policy === 'aimd' ? sloMs / 2 : sloMs };
}

/** `fixed-32/5ms`, `aimd`, `predictive`. */
export function label(spec: BatchingSpec): string {
  return spec.policy === 'fixed' ? `fixed-${spec.maxBatchSize}/${spec.maxDelayMs}ms` : spec.policy;
}
