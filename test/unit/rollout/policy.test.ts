/**
 * A model's `rollout:` and `capture:` sections: what a file may say, what it gets for what it
 * leaves out (ROLLOUT_DEFAULTS, CAPTURE_DEFAULTS, which the field docs and the README's table
 * state too), and the field named when it is wrong. No Redis needed.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  CAPTURE_DEFAULTS,
  ROLLOUT_DEFAULTS,
  configPolicy,
  parseCapture,
  parseRollout,
  readPolicySpec,
  type Fail,
} from '../../../core/models/rollout-policy.ts';
import { documentedDefaults, leaves } from '../../support/jsdoc-defaults.ts';

const fail: Fail = (field, message) => {
  throw new Error(`${field} ${message}`);
};
const POLICY = new URL('../../../core/models/rollout-policy.ts', import.meta.url);
const README = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');

/** The README's rollout table: `| \`rollout.x\` | meaning | default |` rows of its own section. */
function readmeDefaults(): Map<string, string> {
  const start = README.indexOf('## Rolling out versions');
  const section = README.slice(start, README.indexOf('\n## ', start + 1));
  const out = new Map<string, string>();
  for (const row of section.split('\n').filter((l) => /^\| `(rollout|capture)\.[a-zA-Z.]+` \|/.test(l))) {
    const cells = row.split('|').map((c) => c.trim().replace(/`/g, ''));
    out.set(cells[1], cells.at(-2)!);
  }
  return out;
}

describe('rollout and capture sections', () => {
  it('fill in the defaults for what a section leaves out', () => {
    const spec = parseRollout(
      { stable: 1, canary: { version: '2', percent: 10 }, shadow: { version: 3, percent: 5 }, gates: { maxErrorRateIncrease: 0.02 } },
      fail,
    );
    expect(spec).toEqual({
      stable: '1',
      canary: { version: '2', percent: 10, comparePercent: ROLLOUT_DEFAULTS.canary.comparePercent },
      shadow: { version: '3', percent: 5, ...ROLLOUT_DEFAULTS.shadow },
      gates: { minRequests: ROLLOUT_DEFAULTS.gates.minRequests, maxErrorRateIncrease: 0.02 },
    });
    expect(parseRollout(undefined, fail)).toEqual({});
    expect(parseCapture(undefined, fail)).toEqual(CAPTURE_DEFAULTS);
    expect(parseCapture({ percent: 10 }, fail)).toEqual({ ...CAPTURE_DEFAULTS, percent: 10 });
  });

  it('are the @defaultValue of each field, and the README’s, row for row', () => {
    const documented = new Map([
      ...[...documentedDefaults(POLICY, 'CanarySpec')].map(([k, v]) => [`rollout.canary.${k}`, v.value] as const),
      ...[...documentedDefaults(POLICY, 'ShadowSpec')].map(([k, v]) => [`rollout.shadow.${k}`, v.value] as const),
      ...[...documentedDefaults(POLICY, 'GateSpec')].map(([k, v]) => [`rollout.gates.${k}`, v.value] as const),
      ...[...documentedDefaults(POLICY, 'CaptureSpec')].map(([k, v]) => [`capture.${k}`, v.value] as const),
    ]);
    const table = new Map([
      ...[...leaves(ROLLOUT_DEFAULTS)].map(([k, v]) => [`rollout.${k}`, v] as const),
      ...[...leaves(CAPTURE_DEFAULTS)].map(([k, v]) => [`capture.${k}`, v] as const),
    ]);
    expect(Object.fromEntries(documented)).toEqual(Object.fromEntries(table));
    const stated = readmeDefaults();
    for (const [path, value] of table) expect(stated.get(path), path).toBe(String(value));
  });

  it('name the field at fault', () => {
    const refused = (raw: unknown): string => {
      try {
        parseRollout(raw, fail);
        return 'accepted';
      } catch (e) {
        return (e as Error).message;
      }
    };
    expect(refused({ canary: { version: '2', percent: 120 } })).toBe('rollout.canary.percent must be a number from 0 to 100');
    expect(refused({ canary: { percent: 10 } })).toBe('rollout.canary.version must name a version (its folder)');
    expect(refused({ shadow: { version: '2', percent: 5, timeoutMs: 0 } })).toMatch(/^rollout.shadow.timeoutMs must be/);
    expect(refused({ canary: { version: '2', percent: 5, weight: 3 } })).toMatch(/^rollout.canary.weight is not a setting/);
    expect(refused({ stable: '2', canary: { version: '2', percent: 5 } })).toBe('rollout.canary.version is the stable version (2)');
    expect(refused({ canary: { version: '2', percent: 5 }, gates: { minAgreement: 0.9 } })).toMatch(
      /^rollout.gates.minAgreement needs canary.comparePercent above 0/,
    );
    expect(refused({ gates: { maxErrorRateIncrease: 2 } })).toBe('rollout.gates.maxErrorRateIncrease must be a number from 0 to 1');
    expect(refused('50%')).toBe('rollout must be a mapping');
    expect(() => parseCapture({ maxBytes: 1.5 }, fail)).toThrow('capture.maxBytes must be a whole number from 1');
  });

  it('come from the model’s config.yaml, the deployment’s override winning section by section', () => {
    const base = { rollout: { stable: '1' }, capture: { percent: 5 } };
    expect(readPolicySpec(base, undefined)).toEqual({ rollout: { stable: '1' }, capture: { ...CAPTURE_DEFAULTS, percent: 5 } });
    expect(readPolicySpec(base, { capture: { percent: 0 } }).capture.percent).toBe(0);
    expect(readPolicySpec(base, { capture: { percent: 0 } }).rollout).toEqual({ stable: '1' });
    expect(() => readPolicySpec({ rollout: { canary: { version: '2' } } }, undefined)).toThrow("'rollout.canary.percent' is required");
  });

  it('a config policy is revision 0, and its pairs begin with its digest (an edit of the file starts them anew)', () => {
    const a = configPolicy('m', parseRollout({ canary: { version: '2', percent: 5 } }, fail), CAPTURE_DEFAULTS);
    const b = configPolicy('m', parseRollout({ canary: { version: '2', percent: 6 } }, fail), CAPTURE_DEFAULTS);
    expect(a).toMatchObject({ source: 'config', revision: 0, canarySince: `cfg-${a.basis}` });
    expect(a.shadowSince).toBeUndefined();
    expect(a.basis).not.toBe(b.basis);
  });
});
