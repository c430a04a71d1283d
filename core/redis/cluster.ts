/**
 * Redis Cluster: where the seed nodes come from, how each role's ioredis Cluster behaves,
 * sharded pub/sub for the channels that carry per-prediction traffic, and the replica
 * acknowledgement that keeps an acknowledged write through a failover.
 *
 * Why each channel is what it is (the keyspace is in core/redis/connection.ts):
 *   - a prediction's result channel and an API process's reply channel are SHARDED
 *     (SPUBLISH/SSUBSCRIBE): one message per prediction, wanted by at most a few subscribers.
 *     A sharded message stays on the shard that owns its channel's slot, so result traffic
 *     spreads over the masters as the records do. A plain PUBLISH on a cluster is copied over
 *     the cluster bus to every node, so its cost grows with the cluster instead of shrinking.
 *   - the control channel stays GLOBAL (PUBLISH/SUBSCRIBE): a few messages a minute that
 *     every process must hear, wherever it is connected; copying those to every node costs
 *     nothing, and no slot migration can move them away from a subscriber.
 */
import type { RedisPubSub } from 'graphql-redis-subscriptions';
import calculateSlot from 'cluster-key-slot';
import { Cluster, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisRole } from './role.ts';

export interface ClusterSeeds {
  nodes: { host: string; port: number }[];
  username?: string;
  password?: string;
  tls: boolean;
}

function invalid(spec: string, why: string): Error {
  return new Error(`config: 'redis.cluster' ${why}, got '${spec.replace(/\/\/[^@/]*@/, '//***@')}'`);
}

/**
 * The seed nodes of `redis.cluster`: a `redis+cluster://[user:password@]host:port,host:port`
 * URL (`rediss+cluster://` for TLS), or a bare `host:port,host:port` list, which takes its
 * credentials from the userinfo of `redis.url` (where a single Redis keeps them). ioredis
 * learns the rest of the cluster from any seed that answers.
 */
export function parseClusterSeeds(spec: string, url = ''): ClusterSeeds {
  const s = spec.trim();
  let list = s;
  let userinfo: string | undefined;
  let tls = false;
  const scheme = /^(rediss?)\+cluster:\/\/(.*)$/i.exec(s);
  if (scheme) {
    tls = scheme[1].toLowerCase() === 'rediss';
    list = scheme[2].replace(/\/$/, '');
    const at = list.lastIndexOf('@');
    if (at >= 0) {
      userinfo = list.slice(0, at);
      list = list.slice(at + 1);
    }
  } else if (/^\w+:\/\//.test(s)) {
    throw invalid(s, 'must be redis+cluster://host:port,... or a host:port,... list');
  } else if (url) {
    try {
      const u = new URL(url);
      if (u.username || u.password) userinfo = `${u.username}:${u.password}`;
    } catch {
      // redis.url is not a URL: no credentials to take from it.
    }
  }
  if (/[/?#]/.test(list)) throw invalid(s, 'takes no path or options after the nodes');
  const nodes = list
    .split(',')
    .map((n) => n.trim())
    .filter(Boolean)
    .map((n) => {
      const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+):(\d+)$/i.exec(n);
      const port = m ? Number(m[2]) : NaN;
      if (!m || !Number.isInteger(port) || port < 1 || port > 65535) throw invalid(s, `has a node '${n}' that is not host:port`);
      return { host: m[1].replace(/^\[|\]$/g, ''), port };
    });
  if (nodes.length === 0) throw invalid(s, 'names no node');
  const seeds: ClusterSeeds = { nodes, tls };
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(':');
    const user = decodeURIComponent(colon >= 0 ? userinfo.slice(0, colon) : userinfo);
    const password = colon >= 0 ? decodeURIComponent(userinfo.slice(colon + 1)) : '';
    if (colon < 0) seeds.password = user;
    else {
      if (user) seeds.username = user;
      if (password) seeds.password = password;
    }
  }
  return seeds;
}

/** Reconnect to the cluster forever, backing off to at most two seconds between tries. */
const clusterRetryStrategy = (times: number): number => Math.min(100 * 2 ** Math.min(times, 5), 2000);

/**
 * ioredis Cluster options of a role; the same fail-fast and wait-forever split as for one Redis
 * (core/redis/connection.ts), plus what a cluster adds.
 */
export function clusterOptions(role: RedisRole, seeds: ClusterSeeds): ClusterOptions {
  const node: RedisOptions = {
    ...(seeds.username ? { username: seeds.username } : {}),
    ...(seeds.password ? { password: seeds.password } : {}),
    ...(seeds.tls ? { tls: {} } : {}),
    connectTimeout: 2000,
  };
  const common: ClusterOptions = {
    // Reads go to masters: a subscriber reads the record after its SSUBSCRIBE is confirmed and
    // must see the write that preceded the publish, which a lagging replica may not have yet.
    scaleReads: 'master',
    clusterRetryStrategy,
    slotsRefreshTimeout: 2000,
    // Re-read the slot map every 5 s. ioredis 5.11 documents 5000 but sets no default, so
    // without this the map changes only on a MOVED: a replica that joins (which the replica
    // acknowledgement below looks for) or a new master would go unseen.
    slotsRefreshInterval: 5000,
    // While a replica takes over (cluster-node-timeout, then the election), commands to the
    // lost master are retried every 200 ms, 16 times at most (maxRedirections): about 3 s,
    // after which a request gets its 503 instead of waiting for the whole failover.
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    retryDelayOnTryAgain: 100,
  };
  if (role === 'producer') {
    return {
      ...common,
      enableOfflineQueue: false,
      // No auto-pipelining on a cluster, unlike one Redis: ioredis groups an auto-pipeline by
      // node and handles a MOVED for the pipeline as a whole, so while a slot moves its commands
      // fail with MOVED (and scripts with NOSCRIPT on the new node) instead of being redirected
      // (ioredis #1734, #2075; seen here in test/cluster/reshard.test.ts). Plain commands are.
      enableAutoPipelining: false,
      redisOptions: { ...node, maxRetriesPerRequest: 1 },
    };
  }
  return {
    ...common,
    enableOfflineQueue: true,
    enableReadyCheck: true,
    // BullMQ refuses a blocking connection that gives up on commands.
    redisOptions: { ...node, maxRetriesPerRequest: null },
    // One subscriber connection per master for SSUBSCRIBE (ioredis 5.11, PR #1956): a sharded
    // channel can only be subscribed to on the master that owns its slot. Plain SUBSCRIBE (the
    // control channel) keeps its one connection to any node.
    ...(role === 'subscriber' ? { shardedSubscribers: true } : {}),
  };
}

/** A cluster connection of `role` to the nodes of `redis.cluster`. */
export function createCluster(spec: string, url: string, role: RedisRole): Cluster {
  const seeds = parseClusterSeeds(spec, url);
  return new Cluster(seeds.nodes, clusterOptions(role, seeds));
}

/**
 * How long a write waits for its replica before it is acknowledged without one. Loopback and
 * a healthy cluster answer in well under a millisecond; past this the replica is down or far
 * behind, and availability wins: the write is acknowledged anyway.
 */
export const REPLICA_ACK_TIMEOUT_MS = 250;

/** After a master's replica did not answer, its writes go unacknowledged by a replica this long before it is asked again. */
const NO_REPLICA_RECHECK_MS = 5000;
const replicaless = new WeakMap<Cluster, Map<string, number>>();

/**
 * Waits until the master owning `key`'s slot has copied this connection's writes to a replica
 * (WAIT 1). Redis replication is asynchronous: a write acknowledged by a master that dies
 * before its replica got it is lost with the master. Waiting here, before batchline
 * acknowledges a job or a result, closes that window for acknowledged work. WAIT counts the
 * writes of the connection it is sent on, so it goes in a pipeline keyed by `key`, which ioredis
 * sends on the same node connection as the writes before it.
 *
 * A master without a replica (the cluster map lists none, as after its replica took over from
 * a master that died, until a new one joins) is not waited on: WAIT would hold its connection
 * for the whole timeout on every write. One whose replica stopped answering is skipped for a
 * few seconds after a timeout, for the same reason. Availability wins then: writes are
 * acknowledged with the master's copy only, which is what async replication gives.
 * @returns the replicas that acknowledged (0 when none did, or none was asked).
 */
export async function waitForReplica(redis: Cluster, key: string, timeoutMs = REPLICA_ACK_TIMEOUT_MS): Promise<number> {
  const owners = redis.slots[calculateSlot(key)];
  if (owners && owners.length < 2) return 0;
  const master = owners?.[0];
  let skipped = replicaless.get(redis);
  if (!skipped) replicaless.set(redis, (skipped = new Map()));
  if (master !== undefined && (skipped.get(master) ?? 0) > Date.now()) return 0;
  const replies = await redis.pipeline().exists(key).call('WAIT', 1, timeoutMs).exec();
  const [err, acked] = replies?.[1] ?? [new Error('WAIT: no reply'), 0];
  if (err) throw err;
  if (master !== undefined) {
    if (Number(acked) === 0) skipped.set(master, Date.now() + NO_REPLICA_RECHECK_MS);
    else skipped.delete(master);
  }
  return Number(acked);
}

type OnMessage<T> = (message: T) => void;

/** How long one SSUBSCRIBE may go unconfirmed before it is sent again, and how long in all (under the result feed's 2 s set-up bound). */
const SSUBSCRIBE_TRY_MS = 400;
const SSUBSCRIBE_BUDGET_MS = 1500;

/**
 * What core/prediction/result-feed.ts needs of a pub/sub client: graphql-redis-subscriptions'
 * RedisPubSub (plain channels, one Redis) and ShardedPubSub (sharded channels, a cluster)
 * both have it.
 */
export interface ChannelSubscriber {
  subscribe<T>(channel: string, onMessage: OnMessage<T>): Promise<number>;
  unsubscribe(id: number): void;
  getSubscriber(): unknown;
}

/**
 * SSUBSCRIBE with RedisPubSub's shape: JSON messages, one SSUBSCRIBE per channel however many
 * listen, resolved once Redis confirmed it. graphql-redis-subscriptions only speaks SUBSCRIBE,
 * so this sits beside it on the same ioredis Cluster (created with `shardedSubscribers`), which
 * routes each SSUBSCRIBE to the owning master and subscribes again after a failover or a slot
 * migration (it emits `subscribersReady` then; the result feed re-reads the store on it).
 */
export class ShardedPubSub implements ChannelSubscriber {
  private readonly subscriber: Cluster;
  /** Listeners by channel, and the SSUBSCRIBE they all wait for (a second listener must not read the store before it is confirmed). */
  private readonly channels = new Map<string, { listeners: Map<number, OnMessage<unknown>>; subscribed: Promise<unknown> }>();
  private readonly channelOf = new Map<number, string>();
  private nextId = 0;

  /** Settles at ioredis's next `subscribersReady` (one promise shared by every SSUBSCRIBE waiting on it). */
  private resubscribed!: Promise<void>;

  constructor(subscriber: Cluster) {
    this.subscriber = subscriber;
    const arm = (): void => {
      this.resubscribed = new Promise<void>((resolve) =>
        subscriber.once('subscribersReady', () => {
          arm();
          resolve();
        }),
      );
    };
    arm();
    subscriber.on('smessage', (channel: string, raw: string) => {
      const entry = this.channels.get(channel);
      if (!entry) return;
      let message: unknown;
      try {
        message = JSON.parse(raw);
      } catch {
        return;
      }
      for (const l of [...entry.listeners.values()]) l(message);
    });
  }

  getSubscriber(): Cluster {
    return this.subscriber;
  }

  /**
   * SSUBSCRIBE, tried again while the channel's slot is on the move. ioredis answers a
   * sharded SSUBSCRIBE that meets MOVED by dropping it and refreshing the slot map, then
   * subscribing again by itself (its promise never settles), and passes ASK on as an error
   * (its cluster client follows ASK for keys, not for a subscriber's channels). Either way the
   * subscription is in place once ioredis says `subscribersReady`, or once a try succeeds.
   */
  private async ssubscribe(channel: string): Promise<void> {
    const until = Date.now() + SSUBSCRIBE_BUDGET_MS;
    for (let attempt = 0; ; attempt++) {
      const resubscribed = this.resubscribed;
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<'stalled'>((resolve) => (timer = setTimeout(() => resolve('stalled'), SSUBSCRIBE_TRY_MS)));
      const sent = this.subscriber.ssubscribe(channel);
      sent.catch(() => {});
      try {
        if ((await Promise.race([sent, resubscribed, stalled])) !== 'stalled') return;
      } catch (e) {
        if (!/^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)\b|Too many Cluster redirections/.test((e as Error).message) || Date.now() > until) throw e;
      } finally {
        clearTimeout(timer);
      }
      if (Date.now() > until) throw new Error(`TRYAGAIN SSUBSCRIBE ${channel} not confirmed while its slot moves`);
      await new Promise((r) => setTimeout(r, Math.min(400, 50 * 2 ** attempt)));
    }
  }

  async subscribe<T>(channel: string, onMessage: OnMessage<T>): Promise<number> {
    const id = ++this.nextId;
    let entry = this.channels.get(channel);
    if (!entry) this.channels.set(channel, (entry = { listeners: new Map(), subscribed: this.ssubscribe(channel) }));
    entry.listeners.set(id, onMessage as OnMessage<unknown>);
    this.channelOf.set(id, channel);
    try {
      await entry.subscribed;
    } catch (e) {
      this.unsubscribe(id);
      throw e;
    }
    return id;
  }

  unsubscribe(id: number): void {
    const channel = this.channelOf.get(id);
    if (channel === undefined) return;
    this.channelOf.delete(id);
    const entry = this.channels.get(channel);
    entry?.listeners.delete(id);
    if (entry && entry.listeners.size === 0) {
      this.channels.delete(channel);
      // Dropped, not awaited: the subscription's owner has moved on; a connection closing under it is fine.
      // A listener that came back for the channel meanwhile keeps the subscription.
      entry.subscribed.then(
        () => void (this.channels.has(channel) || this.subscriber.sunsubscribe(channel).catch(() => {})),
        () => {},
      );
    }
  }
}

/**
 * The channels of the result feed: RedisPubSub itself on one Redis (as always); on a cluster,
 * sharded channels on RedisPubSub's subscriber connection, which keeps the control channel.
 */
export function resultChannels(pubsub: RedisPubSub): ChannelSubscriber {
  const subscriber = pubsub.getSubscriber() as { isCluster?: boolean };
  return subscriber.isCluster === true ? new ShardedPubSub(subscriber as Cluster) : pubsub;
}
