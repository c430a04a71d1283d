/**
 * Comparing two answers (labels, output differences), reading a pair's summed figures, the
 * gates that judge a canary on them, and a capture's replayable form. No Redis needed.
 */
import { describe, expect, it } from 'vitest';
import { compareResults } from '../../../core/rollout/compare.ts';
import { LATENCY_BUCKETS_MS, toReport, type Pair } from '../../../core/rollout/comparisons.ts';
import { judgeCanary } from '../../../core/rollout/gates.ts';
import { replayableInput, toCloudEvent, type CaptureEntry } from '../../../core/rollout/capture.ts';
import { encodeBase64Tensor } from '../../../core/tensor/codec.ts';
import type { DriftReport } from '../../../core/drift/monitor.ts';

const tensor = (values: number[], shape = [values.length / 2, 2]) => ({
  name: 'y',
  datatype: 'FP32',
  shape,
  base64: encodeBase64Tensor('FP32', values)!,
});
const row = (label: string | null) => ({ label, score: null, probabilities: null });
const pair: Pair = { model: 'm', kind: 'canary', stable: '1', candidate: '2', since: '5' };

describe('compareResults', () => {
  it('counts rows whose labels agree, and the largest absolute and relative difference over every value', () => {
    const a = { predictions: [row('x'), row('y'), row('x')], outputs: [tensor([1, 2, 0, 4, -1, 0])] };
    const b = { predictions: [row('x'), row('x'), row('x')], outputs: [tensor([1, 2.5, 0, 3, -1, 0.5])] };
    const c = compareResults(a, b);
    expect(c).toMatchObject({ rows: 3, agreedRows: 2, values: 6, mismatchedOutputs: 0 });
    expect(c.maxAbs).toBeCloseTo(1);
    // |0 - 0.5| / 0.5: a value that was zero differs by all of itself.
    expect(c.maxRel).toBeCloseTo(1);
  });

  it('leaves out rows without labels and outputs whose shape differs, counting those', () => {
    const c = compareResults(
      { predictions: [row(null)], outputs: [tensor([1, 2])] },
      { predictions: [row(null)], outputs: [tensor([1, 2, 3, 4], [1, 4])] },
    );
    expect(c).toEqual({ rows: 0, agreedRows: 0, values: 0, maxAbs: 0, maxRel: 0, mismatchedOutputs: 1 });
  });
});

describe('a pair’s figures', () => {
  it('gives each side its error rate and latency quantiles, and the deltas between them', () => {
    const hash: Record<string, string> = {
      's.n': '100',
      's.err': '1',
      's.lat.10': '100',
      'c.n': '50',
      'c.err': '10',
      'c.lat.25': '50',
      'm.sent': '12',
      'm.compared': '9',
      'm.failed': '2',
      'm.failed.NON_FINITE_OUTPUT': '2',
      'm.shed': '1',
      'm.shed.queue': '1',
      rows: '9',
      agreed: '6',
      values: '27',
      'abs.n': '9',
      'abs.sum': '4.5',
      'abs.max': '2',
      'rel.max': '0.5',
    };
    const r = toReport(pair, hash);
    expect(r.stableSide).toMatchObject({ version: '1', requests: 100, errors: 1, errorRate: 0.01 });
    expect(r.candidateSide).toMatchObject({ version: '2', requests: 50, errors: 10, errorRate: 0.2 });
    // All of the stable's requests in (5, 10] ms, the canary's in (10, 25]: the median interpolates inside.
    expect(r.stableSide.p50Ms).toBeCloseTo(7.5);
    expect(r.candidateSide.p50Ms).toBeCloseTo(17.5);
    expect(r.latencyDeltaP50Ms).toBeCloseTo(10);
    expect(r).toMatchObject({
      mirrored: 12,
      compared: 9,
      failed: 2,
      shed: 1,
      agreement: 6 / 9,
      maxAbsDiff: 2,
      maxRelDiff: 0.5,
      meanMaxAbsDiff: 0.5,
    });
    expect(r.failures).toEqual([{ code: 'NON_FINITE_OUTPUT', count: 2 }]);
    expect(r.shedReasons).toEqual([{ reason: 'queue', count: 1 }]);
    expect(LATENCY_BUCKETS_MS).toContain(10);
  });

  it('are empty, not zero, before anything was compared', () => {
    const r = toReport(pair, {});
    expect(r).toMatchObject({ agreement: null, maxAbsDiff: null, latencyDeltaP99Ms: null, mirrored: 0 });
    expect(r.stableSide.errorRate).toBeNull();
  });
});

describe('judgeCanary', () => {
  const figures = (s: [number, number], c: [number, number], extra: Record<string, string> = {}) =>
    toReport(pair, { 's.n': String(s[0]), 's.err': String(s[1]), 'c.n': String(c[0]), 'c.err': String(c[1]), ...extra });
  const gates = { minRequests: 100, maxErrorRateIncrease: 0.05 };

  it('rolls back a canary whose error rate exceeds the stable’s by more than the rule allows, once it has enough requests', () => {
    expect(judgeCanary(gates, figures([1000, 10], [99, 99]), undefined, 0)).toBeUndefined();
    const v = judgeCanary(gates, figures([1000, 10], [100, 7]), undefined, 0);
    expect(v).toEqual({
      gate: 'error-rate',
      reason: 'canary 2 failed 7.0% of its requests (7 of 100), the stable 1 1.0% (10 of 1000): more than 5.0% above',
    });
    expect(judgeCanary(gates, figures([1000, 10], [100, 6]), undefined, 0)).toBeUndefined();
    expect(judgeCanary(undefined, figures([1000, 10], [100, 100]), undefined, 0)).toBeUndefined();
  });

  it('rolls back on agreement below the rule over enough comparisons, and on drift reported since the canary began', () => {
    const agree = { minRequests: 10, minAgreement: 0.9 };
    const few = figures([0, 0], [0, 0], { 'm.compared': '9', rows: '9', agreed: '1' });
    expect(judgeCanary(agree, few, undefined, 0)).toBeUndefined();
    const many = figures([0, 0], [0, 0], { 'm.compared': '10', rows: '20', agreed: '17' });
    expect(judgeCanary(agree, many, undefined, 0)?.gate).toBe('agreement');
    expect(judgeCanary(agree, many, undefined, 0)?.reason).toMatch(/on 85.0% of compared rows \(17 of 20\), below 90.0%/);
    const drift = { status: 'DRIFT', pValue: 0.001, samples: 500, checkedAt: 2000 } as DriftReport;
    const d = { minRequests: 1, driftAlpha: 0.01 };
    expect(judgeCanary(d, figures([0, 0], [0, 0]), drift, 1000)?.gate).toBe('drift');
    expect(judgeCanary(d, figures([0, 0], [0, 0]), drift, 3000)).toBeUndefined();
    expect(judgeCanary(d, figures([0, 0], [0, 0]), { ...drift, status: 'INSUFFICIENT_DATA' }, 0)).toBeUndefined();
  });
});

describe('captures', () => {
  it('keep inputs as a client sends them: tensors as base64 bytes, text as text', () => {
    expect(replayableInput({ kind: 'text', texts: ['Maria'] })).toEqual({ texts: ['Maria'] });
    expect(
      replayableInput({ kind: 'tensors', tensors: [{ name: 'x', datatype: 'FP32', shape: [1, 2], data: new Float32Array([1, 2]) }] }),
    ).toEqual({
      tensors: [{ name: 'x', datatype: 'FP32', shape: [1, 2], base64: 'AACAPwAAAEA=' }],
    });
  });

  it('export as CloudEvents: id, source, type, time, and the model, version and request in extensions', () => {
    const e: CaptureEntry = {
      id: '1700000000000-0',
      model: 'm',
      version: '2',
      route: 'canary',
      requestId: 'r1',
      traceId: '0af7651916cd43dd8448eb211c80319c',
      at: 1_700_000_000_000,
      input: { texts: ['Maria'] },
      outputs: [],
      predictions: [row('female')],
      timings: { queueMs: 1, inferenceMs: 2, totalMs: 4 },
      cached: false,
    };
    expect(toCloudEvent(e)).toEqual({
      specversion: '1.0',
      type: 'io.batchline.inference.capture',
      source: '/batchline/models/m',
      id: '1700000000000-0',
      time: '2023-11-14T22:13:20.000Z',
      datacontenttype: 'application/json',
      model: 'm',
      modelversion: '2',
      route: 'canary',
      requestid: 'r1',
      traceid: '0af7651916cd43dd8448eb211c80319c',
      data: { input: { texts: ['Maria'] }, outputs: [], predictions: [row('female')], timings: e.timings, cached: false },
    });
  });
});
