/**
 * `batchline start` (the README's first command) on a machine without a running Redis: it
 * starts a private redis-server from PATH and stops it with the stack, or, without one on
 * PATH, says what to install. The "default local Redis" is moved to a free port with
 * BATCHLINE_LOCAL_REDIS_PORT, so these tests never touch the machine's Redis on 6379.
 */
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { redisUrlConfigured } from '../../cli/local-redis.ts';
import { gql } from '../support/clients.ts';
import { alive, loggedPids } from '../support/processes.ts';
import { freePort } from '../../cli/local-redis.ts';
import { listeningPort, spawnCli, uniquePrefix } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';

/** No Redis URL configured (an empty BATCHLINE_REDIS_URL is unset), the default on a closed port. */
async function unconfigured(extra: Record<string, string> = {}) {
  const cwd = mkdtempSync(join(tmpdir(), 'batchline-start-'));
  const env = {
    BATCHLINE_REDIS_URL: '',
    BATCHLINE_LOCAL_REDIS_PORT: String(await freePort()),
    BATCHLINE_HOST: '127.0.0.1',
    BATCHLINE_MAINTENANCE: 'false',
    ...extra,
  };
  return { redisUrl: '', prefix: uniquePrefix('local-redis'), cwd, env };
}

describe('batchline start without a running Redis', () => {
  it('starts a private redis-server, serves a prediction on it, and stops it with the stack', async () => {
    const o = await unconfigured();
    const start = await spawnCli(['start', '--port', '0'], o, /"msg":"API listening"/);
    let serverPid: number | undefined;
    let url = '';
    try {
      url = /started a private redis-server at (redis:\/\/127\.0\.0\.1:\d+)/.exec(start.output())![1];
      const probe = new Redis(url);
      const info = await probe.info('server');
      serverPid = Number(/process_id:(\d+)/.exec(info)![1]);
      expect(await probe.config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
      expect(await probe.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
      expect(await probe.config('GET', 'bind')).toEqual(['bind', '127.0.0.1']);
      probe.disconnect();
      expect(existsSync(join(o.cwd, '.batchline', 'redis', 'appendonlydir'))).toBe(true);

      const api = `http://127.0.0.1:${listeningPort(start)}/graphql`;
      await until(
        async () => (await gql<{ models: { ready: boolean }[] }>(api, '{ models { ready } }')).body.data!.models.every((m) => m.ready),
        'the workers to be ready',
      );
      const r = await gql<{ predict: { label: string } }>(api, '{ predict(model: "name-gender", input: { text: "Maria" }) { label } }');
      expect(r.body.data!.predict.label).toBe('female');
    } finally {
      const code = await start.stop();
      expect(code, `start exited ${code}; its last output:\n${start.output().slice(-4000)}`).toBe(0);
    }
    expect(serverPid).toBeDefined();
    const pids = [...loggedPids(start), serverPid!];
    await until(() => pids.every((pid) => !alive(pid)), 'the stack and its Redis to be gone', 5000);
    expect(start.output()).toMatch(/"msg":"stack stopped"/);
  });

  it('without redis-server on PATH, exits 1 at once saying what to install', async () => {
    // PATH holds node and nothing else: no redis-server.
    const o = await unconfigured({ PATH: dirname(process.execPath) });
    const failed = spawnCli(['start', '--port', '0'], o, /"msg":"API listening"/, 15_000);
    await expect(failed).rejects.toThrow(/exited with 1/);
    const message = await failed.catch((e: Error) => e.message);
    expect(message).toMatch(/redis-server is not on PATH/);
    expect(message).toMatch(/apt-get install redis-server/);
    expect(message).toMatch(/brew install redis/);
    expect(message).toMatch(/docker run -p 6379:6379 redis:7/);
    expect(message).not.toMatch(/API listening|worker started/);
  });

  it('never replaces an explicitly configured Redis that does not answer: it says so and starts on it', async () => {
    const o = await unconfigured();
    const closed = `redis://127.0.0.1:${o.env.BATCHLINE_LOCAL_REDIS_PORT}`;
    const start = await spawnCli(['start', '--port', '0', '--redis', closed], o, /the configured Redis does not answer/);
    await start.stop();
    await until(() => loggedPids(start).every((pid) => !alive(pid)), 'the stack to be gone', 5000);
    expect(start.output()).not.toMatch(/private redis-server/);
    expect(existsSync(join(o.cwd, '.batchline'))).toBe(false);
  });
});

describe('what counts as a configured Redis URL', () => {
  it('the --redis flag, a non-empty BATCHLINE_REDIS_URL, or redis.url in the config file; nothing else', () => {
    const dir = mkdtempSync(join(tmpdir(), 'batchline-config-'));
    const withUrl = join(dir, 'with.yaml');
    const without = join(dir, 'without.yaml');
    writeFileSync(withUrl, 'redis:\n  url: redis://127.0.0.1:6379\n');
    writeFileSync(without, 'redis:\n  prefix: mine\n');
    expect(redisUrlConfigured(undefined, undefined, {})).toBe(false);
    expect(redisUrlConfigured(undefined, undefined, { BATCHLINE_REDIS_URL: '' })).toBe(false);
    expect(redisUrlConfigured(undefined, without, {})).toBe(false);
    expect(redisUrlConfigured('redis://127.0.0.1:6379', undefined, {})).toBe(true);
    expect(redisUrlConfigured(undefined, undefined, { BATCHLINE_REDIS_URL: 'redis://127.0.0.1:6379' })).toBe(true);
    expect(redisUrlConfigured(undefined, withUrl, {})).toBe(true);
    expect(redisUrlConfigured(undefined, undefined, { BATCHLINE_CONFIG: withUrl })).toBe(true);
  });
});
