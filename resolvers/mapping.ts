/** From core records to the GraphQL types of schema/schema.graphql. */
import type { ModelInfo } from '../core/api/catalog.ts';
import { batchingPlan } from '../core/batching/plan.ts';
import type { PredictionRecord, PredictionResult } from '../core/prediction/record.ts';
import type { RolloutReport } from '../core/rollout/rollout.ts';

export function toPrediction(r: PredictionResult) {
  const first = r.predictions[0];
  return {
    ...r,
    label: first?.label ?? null,
    score: first?.score ?? null,
    probabilities: first?.probabilities ?? null,
  };
}

export function toStatusReport(rec: PredictionRecord) {
  return {
    id: rec.id,
    status: rec.status,
    model: rec.model,
    version: rec.version,
    submittedAt: new Date(rec.submittedAt).toISOString(),
    finishedAt: rec.finishedAt ? new Date(rec.finishedAt).toISOString() : null,
    result: rec.result ? toPrediction(rec.result) : null,
    error: rec.error ?? null,
  };
}

export function toEvent(rec: PredictionRecord) {
  return { id: rec.id, status: rec.status, result: rec.result ? toPrediction(rec.result) : null, error: rec.error ?? null };
}

function batching(m: ModelInfo) {
  const c = m.config;
  if (!c) return null;
  const limit = m.batchLimit ?? null;
  const { edge, worker } = batchingPlan(c.pool, c);
  return { ...c.batching, limit, edge, worker: { ...worker, limit } };
}

export function toModelVersion(m: ModelInfo) {
  const c = m.config;
  return {
    name: m.name,
    version: m.version,
    description: c?.description ?? null,
    pool: c?.pool ?? 'unknown',
    task: c?.task ?? 'unknown',
    inputs: c?.inputs ?? [],
    outputs: c?.outputs ?? [],
    labels: c?.labels ?? null,
    ready: m.ready,
    status: m.status === 'READY' ? 'LOADED' : 'FAILED',
    error: m.error ?? null,
    workers: m.workers,
    executionProviders: m.executionProviders,
    batching: batching(m),
    residency: {
      pinned: c?.residency?.pinned ?? false,
      loadedOn: m.residency.loadedOn,
      residentBytes: m.residency.residentBytes ?? null,
      lastLoadMs: m.residency.lastLoadMs ?? null,
      loads: m.residency.loads,
    },
    sizeBytes: m.sizeBytes,
    metrics: m.metrics ? JSON.stringify(m.metrics) : null,
  };
}

const isoOrNull = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

/** A report in the schema's shape (`Rollout`). */
export function toRollout(r: RolloutReport) {
  const p = r.policy;
  const { canary, shadow, gates } = p.rollout;
  return {
    model: p.model,
    source: p.source,
    revision: p.revision,
    updatedAt: isoOrNull(p.updatedAt),
    updatedBy: p.updatedBy ?? null,
    stable: r.stable,
    pinnedStable: p.rollout.stable ?? null,
    canary: canary ?? null,
    shadow: shadow ?? null,
    gates: gates ? { maxErrorRateIncrease: null, minAgreement: null, driftAlpha: null, ...gates } : null,
    capture: p.capture,
    lastRollback: p.lastRollback ? { gate: null, ...p.lastRollback, at: isoOrNull(p.lastRollback.at) } : null,
    comparisons: r.comparisons.map((c) => ({ ...c, shedReasons: c.shedReasons.map((s) => ({ code: s.reason, count: s.count })) })),
  };
}
