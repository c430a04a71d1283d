/**
 * A test file's Redis Cluster: 3 masters and 3 replicas of the redis-server on PATH, on
 * private ports (harness/local-cluster.ts), started before the file's tests and removed after.
 */
import { afterAll, beforeAll } from 'vitest';
import { Cluster, Redis } from 'ioredis';
import { startLocalCluster, type LocalCluster } from '../../harness/local-cluster.ts';
import type { StackOptions } from '../../harness/stack.ts';

/**
 * A URL where nothing listens: on a cluster `redis.url` must not be used, so a component that
 * still reached for it fails here instead of touching the machine's Redis at the default address.
 */
export const NO_SINGLE_REDIS = 'redis://127.0.0.1:1';

/** Starts the file's cluster (beforeAll) and stops it (afterAll); read `.cluster` inside tests. */
export function useCluster(o: { nodeTimeoutMs?: number } = {}): { cluster: LocalCluster } {
  const holder = { cluster: undefined as unknown as LocalCluster };
  beforeAll(async () => {
    // A short node timeout: a killed master is replaced within a few seconds.
    holder.cluster = await startLocalCluster({ masters: 3, replicas: 1, nodeTimeoutMs: o.nodeTimeoutMs ?? 1000 });
  }, 60_000);
  afterAll(async () => {
    await holder.cluster?.stop();
  });
  return holder;
}

/** Stack options for batchline processes on the cluster. */
export function clusterStack(
  cluster: LocalCluster,
  prefix: string,
  o: { models?: string; env?: Record<string, string> } = {},
): StackOptions {
  return { redisUrl: NO_SINGLE_REDIS, prefix, models: o.models, env: { BATCHLINE_REDIS_CLUSTER: cluster.seeds, ...o.env } };
}

/** A plain ioredis Cluster client for the test's own reads. */
export function clusterClient(cluster: LocalCluster): Cluster {
  const c = new Cluster(
    cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
    { redisOptions: { maxRetriesPerRequest: 3 }, retryDelayOnFailover: 200 },
  );
  c.on('error', () => {});
  return c;
}

/** Subscribers of a sharded channel, asked of the master that owns it. */
export async function shardSubscribers(cluster: LocalCluster, channel: string): Promise<number> {
  const master = await cluster.masterOf(await cluster.slotOf(channel));
  const r = new Redis(master.port, '127.0.0.1', { maxRetriesPerRequest: 1 });
  r.on('error', () => {});
  try {
    const [, n] = (await r.call('PUBSUB', 'SHARDNUMSUB', channel)) as [string, number];
    return Number(n);
  } finally {
    r.disconnect();
  }
}

/** The sharded channels matching `pattern` that someone subscribes to, on every master. */
export async function shardChannels(cluster: LocalCluster, pattern: string): Promise<string[]> {
  const out: string[] = [];
  for (const m of (await cluster.topology()).filter((n) => n.role === 'master' && !n.failed)) {
    const r = new Redis(m.port, '127.0.0.1', { maxRetriesPerRequest: 1 });
    r.on('error', () => {});
    try {
      out.push(...((await r.call('PUBSUB', 'SHARDCHANNELS', pattern)) as string[]));
    } finally {
      r.disconnect();
    }
  }
  return out;
}

/** Keys matching `pattern` on each master, by port: a SCAN per node, as a cluster needs. */
export async function keysPerMaster(cluster: LocalCluster, pattern: string): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const m of (await cluster.topology()).filter((n) => n.role === 'master' && !n.failed)) {
    const r = new Redis(m.port, '127.0.0.1', { maxRetriesPerRequest: 1 });
    r.on('error', () => {});
    try {
      let cursor = '0';
      let n = 0;
      do {
        const [next, keys] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        n += keys.length;
      } while (cursor !== '0');
      out.set(m.port, n);
    } finally {
      r.disconnect();
    }
  }
  return out;
}
