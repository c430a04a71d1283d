/**
 * `redis.cluster` as the configuration reads it, and the keyspace on a cluster: which keys
 * share a slot, and that one Redis keeps the key names it always had. No Redis needed.
 */
import { randomUUID } from 'node:crypto';
import calculateSlot from 'cluster-key-slot';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../core/config/settings.ts';
import { parseClusterSeeds } from '../../../core/redis/cluster.ts';
import { keyspace } from '../../../core/redis/connection.ts';
import { shardOf } from '../../../core/prediction/queues.ts';

describe('redis.cluster', () => {
  it('reads a redis+cluster:// URL with its credentials, and a bare list taking them from redis.url', () => {
    expect(parseClusterSeeds('redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2:7001')).toEqual({
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 7001 },
      ],
      username: 'app',
      password: 's@cret',
      tls: false,
    });
    expect(parseClusterSeeds('rediss+cluster://:pw@redis-0.redis:6379')).toEqual({
      nodes: [{ host: 'redis-0.redis', port: 6379 }],
      password: 'pw',
      tls: true,
    });
    expect(parseClusterSeeds('a:1, b:2', 'redis://:fromurl@x:6379')).toEqual({
      nodes: [
        { host: 'a', port: 1 },
        { host: 'b', port: 2 },
      ],
      password: 'fromurl',
      tls: false,
    });
    expect(parseClusterSeeds('[::1]:7000').nodes).toEqual([{ host: '::1', port: 7000 }]);
  });

  it('refuses at start what is not a list of host:port, naming the setting and hiding the password', () => {
    const refused = (cluster: string): string => {
      try {
        loadConfig({ env: { BATCHLINE_REDIS_CLUSTER: cluster } });
      } catch (e) {
        return (e as Error).message;
      }
      return 'accepted';
    };
    expect(refused('redis://a:1')).toMatch(/'redis.cluster' must be redis\+cluster:\/\//);
    expect(refused('a:1,b')).toMatch(/'redis.cluster' has a node 'b' that is not host:port/);
    expect(refused('a:99999')).toMatch(/not host:port/);
    expect(refused('redis+cluster://u:topsecret@a:1/0')).toMatch(/no path/);
    expect(refused('redis+cluster://u:topsecret@a:1/0')).not.toMatch(/topsecret/);
    expect(refused('redis+cluster://a:1,b:2')).toBe('accepted');
    expect(() => loadConfig({ env: { BATCHLINE_REDIS_CLUSTER: 'a:1', BATCHLINE_REDIS_PREFIX: '{bl}' } })).toThrow(
      /'redis.prefix' must not contain braces/,
    );
  });

  it('reads queue.shards per pool from the environment and refuses what is not a count', () => {
    expect(loadConfig({ env: { BATCHLINE_QUEUE_SHARDS_CPU: '4' } }).queue.shards).toEqual({ cpu: 4, gpu: 1 });
    expect(() => loadConfig({ env: { BATCHLINE_QUEUE_SHARDS_GPU: '1.5' } })).toThrow(/'queue.shards.gpu' must be an integer from 1 to 256/);
    expect(() => loadConfig({ env: { BATCHLINE_QUEUE_SHARDS_GPU: '0' } })).toThrow(/queue.shards.gpu/);
  });
});

describe('the keyspace', () => {
  it('on one Redis, names every key as before: no tags', () => {
    const k = keyspace('batchline');
    expect(k.prediction('p1')).toBe('batchline:prediction:p1');
    expect(k.resultChannel('p1')).toBe('batchline:result:p1');
    expect(k.queueName('cpu')).toBe('cpu');
    expect(k.queueName('cpu', 2, 3)).toBe('cpu-2');
    expect(k.admitting(k.queueName('cpu'))).toBe('batchline:cpu:admitting');
    expect(k.stats.second(5)).toBe('batchline:stats:s:5');
    expect(k.driftCounts('m@1', 9)).toBe('batchline:drift:counts:m@1:9');
    expect(k.rolloutPolicy('m')).toBe('batchline:rollout:m:policy');
    expect(k.capture('m')).toBe('batchline:capture:m');
  });

  it('on a cluster, puts what one script or MULTI touches in one slot, and spreads predictions over slots', () => {
    const k = keyspace('batchline', true);
    const ids = Array.from({ length: 200 }, () => randomUUID());
    for (const id of ids) expect(calculateSlot(k.prediction(id))).toBe(calculateSlot(k.resultChannel(id)));
    expect(new Set(ids.map((id) => calculateSlot(k.prediction(id)))).size).toBeGreaterThan(190);
    // BullMQ's keys are `<prefix>:<queue>:<type>`: the admission set is in its queue's slot.
    const q = k.queueName('cpu');
    expect(calculateSlot(`batchline:${q}:wait`)).toBe(calculateSlot(k.admitting(q)));
    expect(calculateSlot(`batchline:${q}:prioritized`)).toBe(calculateSlot(k.admitting(q)));
    expect(new Set([k.stats.second(1), k.stats.step(2), k.stats.processes].map(calculateSlot)).size).toBe(1);
    expect(calculateSlot(k.driftCounts('m@1', 1))).toBe(calculateSlot(k.driftCounts('m@1', 2)));
    // A model's rollout keys (policy, comparisons, capture stream) share its slot; models spread.
    expect(new Set([k.rolloutPolicy('m'), k.rolloutComparison('m', 'canary:1:2:5'), k.capture('m')].map(calculateSlot)).size).toBe(1);
    expect(calculateSlot(k.capture('m'))).not.toBe(calculateSlot(k.capture('n')));
  });

  it('spreads a pool’s shards evenly over the slot space, the same way in every process', () => {
    const k = keyspace('batchline', true);
    for (const shards of [3, 4, 6]) {
      const names = Array.from({ length: shards }, (_, i) => k.queueName('cpu', i, shards));
      expect(names).toEqual(Array.from({ length: shards }, (_, i) => keyspace('other', true).queueName('cpu', i, shards)));
      // On masters holding equal runs of slots, shard i sits in run i (counted from shard 0's).
      const base = calculateSlot(names[0]);
      const runs = names.map((n) => Math.round((((calculateSlot(n) - base + 16384) % 16384) / 16384) * shards) % shards);
      expect(runs).toEqual(names.map((_, i) => i));
    }
  });

  it('sends each job to one shard by its id, the same on every replica, evenly', () => {
    const ids = Array.from({ length: 3000 }, () => randomUUID());
    const counts = [0, 0, 0];
    for (const id of ids) counts[shardOf(id, 3)]++;
    for (const c of counts) expect(c).toBeGreaterThan(800);
    expect(ids.every((id) => shardOf(id, 1) === 0)).toBe(true);
    // Every replica, and every release (a job's shard is how a cancel or a poll finds it again):
    // the standard 32-bit FNV-1a of the id, modulo the shard count. These values come from the
    // reference algorithm, not from shardOf; a different hash, or one keyed per process, fails here.
    const reference: [string, number, number][] = [
      ['0b6d2c4e-7f1a-4c3e-9a55-1d2e3f4a5b6c', 0x26a68ed7 % 3, 0x26a68ed7 % 4],
      ['f47ac10b-58cc-4372-a567-0e02b2c3d479', 0x5b651540 % 3, 0x5b651540 % 4],
      ['job-1', 0x2fc26916 % 3, 0x2fc26916 % 4],
      ['x', 0xfd0c5087 % 3, 0xfd0c5087 % 4],
    ];
    for (const [id, of3, of4] of reference) expect([id, shardOf(id, 3), shardOf(id, 4)]).toEqual([id, of3, of4]);
  });
});
