/**
 * The configuration's defaults as the README states them, and the settings validated at start.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, ENV_VARS, loadConfig } from '../../core/config.ts';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

/** The default the README's configuration table gives an environment variable. */
function readmeDefault(env: string): string | undefined {
  const row = README.split('\n').find((l) => l.startsWith(`| \`${env}\``));
  return row?.split('|').at(-2)?.trim().replace(/`/g, '');
}

describe('defaults', () => {
  it('a killed worker’s jobs run again within about 15 s: a 10 s lock, checked every half of it', () => {
    // With the old 30 s lock the README's promise was 45 s; the bound is lock + lock/2.
    const lock = loadConfig({ env: {} }).workers.lockDurationMs;
    expect(lock).toBe(10_000);
    expect(lock * 1.5).toBeLessThanOrEqual(15_000);
    expect(readmeDefault('BATCHLINE_LOCK_DURATION_MS')).toBe(String(lock));
    expect(README).toMatch(/about 15 s by default/);
  });

  it('every numeric default in the README’s table is the one the server uses', () => {
    const leaf = (path: string): unknown => path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], DEFAULT_CONFIG);
    const checked: string[] = [];
    for (const [env, path] of Object.entries(ENV_VARS)) {
      const stated = readmeDefault(env);
      const actual = leaf(path);
      if (stated === undefined || typeof actual !== 'number' || !/^\d+$/.test(stated)) continue;
      expect(Number(stated), `${env} (${path})`).toBe(actual);
      checked.push(env);
    }
    expect(checked.length).toBeGreaterThan(10);
  });
});

describe('validation at start', () => {
  it('refuses an unknown log level or request-log mode, naming the setting', () => {
    expect(() => loadConfig({ env: { BATCHLINE_LOG_LEVEL: 'verbose' } })).toThrow(/'log\.level' must be/);
    expect(() => loadConfig({ env: { BATCHLINE_LOG_REQUESTS: 'some' } })).toThrow(/'log\.requests' must be all, errors or off/);
    expect(loadConfig({ env: { BATCHLINE_LOG_REQUESTS: 'errors' } }).log.requests).toBe('errors');
  });
});
