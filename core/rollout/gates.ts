/**
 * The rules that roll a canary back (a policy's `gates`), judged on the deployment's figures
 * of the stable-canary pair and on the drift monitor's report of the canary version. Each
 * verdict names its rule and says why in numbers, for the log, the metrics and the view.
 */
import type { DriftReport } from '../drift/monitor.ts';
import type { ComparisonReport } from './comparisons.ts';
import type { GateSpec } from '../models/rollout-policy.ts';

export type GateName = 'error-rate' | 'agreement' | 'drift';

export interface GateVerdict {
  gate: GateName;
  reason: string;
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;

/**
 * The first rule the canary breaks, or undefined. Rules judge only once the canary has
 * answered `minRequests` requests (and, for agreement, that many comparisons were made), and
 * a drift report only when it was made after the canary began (`sinceMs`).
 */
export function judgeCanary(
  gates: GateSpec | undefined,
  figures: ComparisonReport,
  drift: DriftReport | undefined,
  sinceMs: number,
): GateVerdict | undefined {
  if (!gates) return undefined;
  const c = figures.candidateSide;
  const s = figures.stableSide;
  if (gates.maxErrorRateIncrease !== undefined && c.requests >= gates.minRequests) {
    const canaryRate = c.errors / c.requests;
    const stableRate = s.requests > 0 ? s.errors / s.requests : 0;
    if (canaryRate - stableRate > gates.maxErrorRateIncrease)
      return {
        gate: 'error-rate',
        reason: `canary ${c.version} failed ${pct(canaryRate)} of its requests (${c.errors} of ${c.requests}), the stable ${s.version} ${pct(stableRate)} (${s.errors} of ${s.requests}): more than ${pct(gates.maxErrorRateIncrease)} above`,
      };
  }
  if (gates.minAgreement !== undefined && figures.compared >= gates.minRequests && figures.agreement !== null) {
    if (figures.agreement < gates.minAgreement)
      return {
        gate: 'agreement',
        reason: `canary ${c.version} agreed with the stable ${s.version} on ${pct(figures.agreement)} of compared rows (${figures.agreedRows} of ${figures.rows}), below ${pct(gates.minAgreement)}`,
      };
  }
  if (gates.driftAlpha !== undefined && drift && drift.status !== 'INSUFFICIENT_DATA' && drift.checkedAt >= sinceMs) {
    if (drift.pValue < gates.driftAlpha)
      return {
        gate: 'drift',
        reason: `canary ${c.version}'s predicted classes depart from training: drift p-value ${drift.pValue.toPrecision(3)} over ${drift.samples} predictions, below ${gates.driftAlpha}`,
      };
  }
  return undefined;
}
