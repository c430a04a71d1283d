/** Which version answers: named, stable, canary by weight or by route key, and when a mirror run is sampled. No Redis needed. */
import { describe, expect, it } from 'vitest';
import { chooseRoute, routeBucket, type ChooseOptions } from '../../../core/rollout/router.ts';
import { mulberry32 } from '../../../scripts/models/prng.ts';

const base = (o: Partial<ChooseOptions> = {}): ChooseOptions => ({
  model: 'm',
  stable: '1',
  policy: { stable: '1', canary: { version: '2', percent: 25, comparePercent: 0 } },
  ready: () => true,
  ...o,
});

describe('chooseRoute', () => {
  it('gives a client the version it names, and the stable without a policy', () => {
    expect(chooseRoute(base({ named: '2' }))).toEqual({ version: '2', route: 'named' });
    expect(chooseRoute(base({ named: '1', random: () => 0 }))).toEqual({ version: '1', route: 'named' });
    expect(chooseRoute(base({ policy: undefined, random: () => 0 }))).toEqual({ version: '1', route: 'stable' });
  });

  it('sends the canary its percentage of requests, and its share to the stable when it cannot serve', () => {
    expect(chooseRoute(base({ random: () => 0.2499 })).route).toBe('canary');
    expect(chooseRoute(base({ random: () => 0.25 })).route).toBe('stable');
    expect(chooseRoute(base({ random: () => 0, ready: (v) => v !== '2' }))).toEqual({ version: '1', route: 'stable' });
    const rand = mulberry32(7);
    let canary = 0;
    for (let i = 0; i < 20_000; i++) if (chooseRoute(base({ random: rand })).route === 'canary') canary++;
    // Binomial(20000, 0.25): sd 61; 5 sd either side.
    expect(Math.abs(canary - 5000)).toBeLessThan(306);
  });

  it('places a route key by its hash: the same version every time, and a key on the canary stays there as it grows', () => {
    const keys = Array.from({ length: 4000 }, (_, i) => `user-${i}`);
    const at = (percent: number) =>
      keys.map(
        (k) =>
          chooseRoute(base({ routeKey: k, policy: { canary: { version: '2', percent, comparePercent: 0 } }, random: Math.random })).version,
      );
    const ten = at(10);
    expect(at(10)).toEqual(ten);
    const twenty = at(20);
    ten.forEach((v, i) => v === '2' && expect(twenty[i]).toBe('2'));
    // Binomial(4000, 0.1): sd 19; 5 sd.
    expect(Math.abs(ten.filter((v) => v === '2').length - 400)).toBeLessThan(95);
  });

  it('spreads keys evenly over [0, 1), consecutive ones included (chi-square over 20 bins)', () => {
    const bins = new Array<number>(20).fill(0);
    const n = 20_000;
    for (let i = 0; i < n; i++) bins[Math.floor(routeBucket('name-gender', `user-${i}`) * 20)]++;
    const chi = bins.reduce((a, o) => a + (o - n / 20) ** 2 / (n / 20), 0);
    // 19 degrees of freedom: P(chi-square > 43.8) = 0.001.
    expect(chi).toBeLessThan(43.8);
    expect(routeBucket('a', 'k')).not.toBe(routeBucket('b', 'k'));
  });

  it('samples a shadow run of stable requests, and a stable run of canary requests at comparePercent', () => {
    const shadow = { version: '3', percent: 50, timeoutMs: 1000, maxQueueDepth: 10 };
    expect(chooseRoute(base({ policy: { shadow }, random: () => 0.4 }))).toEqual({
      version: '1',
      route: 'stable',
      mirror: { version: '3', kind: 'shadow' },
    });
    expect(chooseRoute(base({ policy: { shadow }, random: () => 0.6 }))).toEqual({ version: '1', route: 'stable' });
    expect(chooseRoute(base({ policy: { shadow }, random: () => 0.4, ready: (v) => v !== '3' }))).toEqual({
      version: '1',
      route: 'stable',
    });
    const canary = { version: '2', percent: 100, comparePercent: 50 };
    expect(chooseRoute(base({ policy: { canary, shadow }, random: () => 0.3 }))).toEqual({
      version: '2',
      route: 'canary',
      mirror: { version: '1', kind: 'canary' },
    });
    // A canary request is not shadowed: the shadow compares against the stable's answers.
    expect(chooseRoute(base({ policy: { canary, shadow }, random: () => 0.7 }))).toEqual({ version: '2', route: 'canary' });
  });
});
