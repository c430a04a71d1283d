/**
 * The configuration's defaults as the README and the field docs state them, and the settings validated at start.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, ENV_VARS, loadConfig } from '../../core/config/settings.ts';
import { documentedDefaults, leaves } from '../support/jsdoc-defaults.ts';

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

  it('every setting has a @defaultValue, and it is the one in DEFAULT_CONFIG', () => {
    const documented = documentedDefaults(new URL('../../core/config/settings.ts', import.meta.url), 'BatchlineConfig');
    const actual = leaves(DEFAULT_CONFIG);
    expect([...documented.keys()].sort()).toEqual([...actual.keys()].sort());
    for (const [path, value] of actual) expect(documented.get(path)!.value, path).toEqual(value);
  });

  it('every setting but the file itself can be set from the environment', () => {
    expect(Object.values(ENV_VARS).sort()).toEqual([...leaves(DEFAULT_CONFIG).keys()].sort());
  });

  it('a worker serves /health, /ready and /metrics only when workers.httpPort is set', () => {
    expect(DEFAULT_CONFIG.workers.httpPort).toBe(0);
    expect(loadConfig({ env: { BATCHLINE_WORKER_HTTP_PORT: '9464' } }).workers.httpPort).toBe(9464);
    expect(readmeDefault('BATCHLINE_WORKER_HTTP_PORT')).toBe('0');
  });
});

describe('validation at start', () => {
  it('refuses an unknown log level or request-log mode, naming the setting', () => {
    expect(() => loadConfig({ env: { BATCHLINE_LOG_LEVEL: 'verbose' } })).toThrow(/'log\.level' must be/);
    expect(() => loadConfig({ env: { BATCHLINE_LOG_REQUESTS: 'some' } })).toThrow(/'log\.requests' must be all, errors or off/);
    expect(loadConfig({ env: { BATCHLINE_LOG_REQUESTS: 'errors' } }).log.requests).toBe('errors');
  });

  it('refuses an unknown execution provider or log level from the config file too, saying what was given', () => {
    expect(() => loadConfig({ env: { BATCHLINE_EXECUTION_PROVIDER: 'rocm' } })).toThrow(
      "config: 'workers.executionProvider' must be auto, cpu, cuda or webgpu, got 'rocm'",
    );
    expect(() => loadConfig({ env: { BATCHLINE_WEBGPU_LAYOUT: 'nhwc' } })).toThrow(
      "config: 'workers.webgpu.preferredLayout' must be NCHW or NHWC, got 'nhwc'",
    );
    expect(() => loadConfig({ env: {}, overrides: { workers: { webgpu: { validationMode: 'none' } } } })).toThrow(
      "config: 'workers.webgpu.validationMode' must be disabled, wgpuOnly, basic or full, got 'none'",
    );
    expect(
      loadConfig({
        env: { BATCHLINE_EXECUTION_PROVIDER: 'webgpu', BATCHLINE_CPU_FALLBACK: 'true', BATCHLINE_WEBGPU_BUFFER_CACHE: 'simple' },
      }).workers,
    ).toMatchObject({
      executionProvider: 'webgpu',
      cpuFallback: true,
      webgpu: { preferredLayout: 'NCHW', validationMode: 'basic', storageBufferCacheMode: 'simple' },
    });
    expect(() => loadConfig({ env: {}, overrides: { log: { level: 'loud' } } })).toThrow(
      "config: 'log.level' must be trace, debug, info, warn, error, fatal or silent, got 'loud'",
    );
  });

  it('an unknown log level stops serve and worker at start, exit 1, with the message', async () => {
    const cli = fileURLToPath(new URL('../../cli/main.ts', import.meta.url));
    for (const args of [['serve'], ['worker', '--pool', 'cpu']]) {
      // Nothing is started: the configuration is read first. The Redis URL points nowhere, to be sure.
      const run = promisify(execFile)(process.execPath, [cli, ...args], {
        env: { ...process.env, BATCHLINE_LOG_LEVEL: 'verbose', BATCHLINE_REDIS_URL: 'redis://127.0.0.1:1' },
        timeout: 30_000,
      });
      await expect(run).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining("'log.level' must be trace") });
    }
  });
});
