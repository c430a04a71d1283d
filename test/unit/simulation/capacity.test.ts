/**
 * Capacity planning from the simulation: `batchline plan capacity`, and the replicas
 * `k8s explain` suggests for a pool that states an expected rate.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import { runPlanCli } from '../../../cli/plan.ts';
import { planCapacity, type CapacityPlan } from '../../../core/simulation/capacity.ts';
import { GPU_PROFILE } from '../../../core/simulation/scenarios.ts';
import { loadProfile } from '../../../core/simulation/service.ts';
import { runK8sCli } from '../../../k8s/cli.ts';
import { checkSchema } from '../../../k8s/schema.ts';
import { exampleDoc, set } from '../k8s/manifests.ts';

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (s: string) => void out.push(s), err: (s: string) => void err.push(s) }, out, err };
}

describe('planCapacity', () => {
  it('sizes replicas to the rate one replica holds, and checks the size in its own run', async () => {
    const plan = await planCapacity({ profile: loadProfile(GPU_PROFILE), ratePerSec: 40_000, sloMs: 50, policy: 'aimd' });
    expect(plan.replicas).toBe(Math.ceil(40_000 / plan.perReplicaPerSec));
    expect(plan.slots).toBe(plan.replicas);
    expect(plan.atSize.offeredPerSec).toBeCloseTo(40_000 / plan.replicas, 6);
    expect(plan.atSize.withinSlo).toBe(true);
    expect(plan.atSize.waitMs.p99).toBeGreaterThan(0);
    // One replica fewer would have to carry more than one replica holds.
    expect(40_000 / (plan.replicas - 1)).toBeGreaterThan(plan.perReplicaPerSec);
  });
});

describe('batchline plan capacity', () => {
  it('prints replicas, slots and the queueing delay for one policy, or JSON', async () => {
    const t = io();
    expect(await runPlanCli(['capacity', '--profile', GPU_PROFILE, '--rate', '10000', '--slo', '50', '--policy', 'predictive'], t.io)).toBe(
      0,
    );
    const text = t.out.join('');
    expect(text).toMatch(/capacity for 10000 requests\/s within p99 50 ms, profile gpu-like/);
    expect(text).toMatch(/^predictive\s+\d+\s+1\s+1\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$/m);
    const j = io();
    expect(
      await runPlanCli(['capacity', '--profile', GPU_PROFILE, '--rate', '10000', '--slo', '50', '--policy', 'predictive', '--json'], j.io),
    ).toBe(0);
    const [plan] = JSON.parse(j.out.join('')) as CapacityPlan[];
    expect(plan).toMatchObject({ policy: 'predictive', replicas: 1, slots: 1 });
  });

  it.each([
    [['capacity', '--rate', '1', '--slo', '50'], 2, /--profile is required/],
    [['capacity', '--profile', GPU_PROFILE, '--rate', 'lots', '--slo', '50'], 2, /--rate must be a number above 0, got lots/],
    [
      ['capacity', '--profile', GPU_PROFILE, '--rate', '1', '--slo', '50', '--policy', 'magic'],
      2,
      /--policy must be one of fixed, aimd, predictive/,
    ],
    [['capacity', '--profile', GPU_PROFILE, '--rate', '1', '--slo', '50', '--slots', '2'], 2, /Unknown option '--slots'/],
    [['size'], 2, /unknown plan command size/],
    [['capacity', '--profile', '/no/such.json', '--rate', '1', '--slo', '50'], 1, /cannot read profile \/no\/such.json/],
  ])('%j: exit %i and a clear message', async (args, code, message) => {
    const t = io();
    expect(await runPlanCli(args as string[], t.io)).toBe(code);
    expect(t.err.join('')).toMatch(message);
    expect(t.out).toEqual([]);
  });
});

describe('a ModelServer that states an expected rate', () => {
  const withRate = (rate: number, maxReplicas: number) => {
    const doc = exampleDoc('gpu.yaml');
    set(doc, 'spec.pools.gpu.autoscaling', {
      minReplicas: 1,
      maxReplicas,
      targetLatencyMs: 100,
      expectedRate: { requestsPerSecond: rate, profile: 'gpu-like.json' },
    });
    // The example's model SLO (20 ms) leaves the GPU-like profile's 8 ms runs little room; plan at 50.
    set(doc, 'spec.models.1.slo', { latencyMs: 50 });
    return doc;
  };
  const write = (doc: unknown): string => {
    const dir = mkdtempSync(join(tmpdir(), 'batchline-capacity-'));
    writeFileSync(join(dir, 'gpu-like.json'), JSON.stringify(loadProfile(GPU_PROFILE)));
    writeFileSync(join(dir, 'server.yaml'), stringify(doc));
    return join(dir, 'server.yaml');
  };

  it('is valid against the CRD; a rate without a profile is not', () => {
    expect(checkSchema(withRate(20_000, 4)).errors).toEqual([]);
    const doc = withRate(20_000, 4);
    set(doc, 'spec.pools.gpu.autoscaling.expectedRate', { requestsPerSecond: 5 });
    expect(checkSchema(doc).errors).toContain('spec.pools.gpu.autoscaling.expectedRate.profile: required');
  });

  it('k8s explain says how many replicas the simulation needs, and whether maxReplicas covers it', async () => {
    const t = io();
    expect(await runK8sCli(['k8s', 'explain', write(withRate(20_000, 4))], t.io)).toBe(0);
    const line = t.out
      .join('')
      .split('\n')
      .find((l) => l.includes('expected rate:'))!;
    const m =
      /expected rate: +20000 requests\/s \(profile gpu-like\): (\d+) replicas of 1 slot hold it at p99 ([\d.]+) ms, queueing p99 [\d.]+ ms \(simulated, (\d+) requests\/s a replica\); maxReplicas 4 covers it/.exec(
        line,
      );
    expect(m, line).not.toBeNull();
    // The pool's own batching (aimd up to 64 rows) is what is simulated: 64-row batches of 10.6 ms, not the 1024 the profile allows.
    expect(Number(m![1])).toBe(Math.ceil(20_000 / Number(m![3])));
    expect(Number(m![3])).toBeLessThan((64 / (8 + 0.04 * 64)) * 1000);
    expect(Number(m![2])).toBeLessThanOrEqual(50);
  });

  it('k8s render warns when maxReplicas is below what the expected rate needs', async () => {
    const t = io();
    expect(await runK8sCli(['k8s', 'render', write(withRate(20_000, 1))], t.io)).toBe(0);
    expect(t.err.join('')).toMatch(/warning: pool gpu: 20000 requests\/s .*maxReplicas 1 is below it: raise it to [2-9]/);
    expect(t.out.join('')).toMatch(/kind: ScaledObject/);
  });

  it('names the field when the profile cannot be read', async () => {
    const doc = withRate(20_000, 4);
    set(doc, 'spec.pools.gpu.autoscaling.expectedRate.profile', 'missing.json');
    const t = io();
    expect(await runK8sCli(['k8s', 'explain', write(doc)], t.io)).toBe(1);
    expect(t.err.join('')).toMatch(/spec\.pools\.gpu\.autoscaling\.expectedRate\.profile: cannot read profile/);
  });
});
