/**
 * Redis connections, by role, to one Redis or to a Redis Cluster (core/redis/cluster.ts).
 * Producers on the request path fail fast so an outage becomes a 503 instead of a hung
 * request; BullMQ workers and subscribers wait and reconnect.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import calculateSlot from 'cluster-key-slot';
import { Redis, type Cluster, type RedisOptions } from 'ioredis';
import { isRedisUnavailable } from '../errors/registry.ts';
import { createCluster } from './cluster.ts';
import type { RedisRole } from './role.ts';

/** A connection to one Redis or to a cluster: every component takes either. */
export type RedisClient = Redis | Cluster;

/** Where Redis is: `config.redis` (a cluster when `cluster` is set, else `url`). */
export interface RedisTarget {
  url: string;
  cluster?: string;
}

/** Reconnect forever, backing off to at most two seconds between tries. */
const retryStrategy = (times: number): number => Math.min(100 * 2 ** Math.min(times, 5), 2000);

export function redisOptions(role: RedisRole): RedisOptions {
  if (role === 'producer') {
    // Auto-pipelining sends the commands of one tick in one write: under load, many
    // requests' SETs and script calls share a syscall.
    return {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2000,
      retryStrategy,
      lazyConnect: false,
      enableAutoPipelining: true,
    };
  }
  return { maxRetriesPerRequest: null, retryStrategy, enableReadyCheck: true };
}

/** Whether a connection is to a Redis Cluster (keys are then hash-tagged, channels sharded). */
export function isCluster(redis: RedisClient): redis is Cluster {
  return (redis as { isCluster?: boolean }).isCluster === true;
}

/** A connection of `role`: a URL is one Redis, as before; a target with `cluster` set is a cluster. */
export function createRedis(target: string, role: RedisRole): Redis;
export function createRedis(target: RedisTarget, role: RedisRole): RedisClient;
export function createRedis(target: string | RedisTarget, role: RedisRole): RedisClient {
  const redis =
    typeof target !== 'string' && target.cluster
      ? createCluster(target.cluster, target.url, role)
      : new Redis(typeof target === 'string' ? target : target.url, redisOptions(role));
  // Errors surface on the commands that fail; an unhandled 'error' event would only add noise.
  redis.on('error', () => {});
  return redis;
}

/** Resolves once the connection is ready, or rejects after `timeoutMs`. */
export function whenReady(redis: RedisClient, timeoutMs = 10_000): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      redis.off('ready', onReady);
      reject(new Error(`Redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = (): void => {
      clearTimeout(timer);
      resolve();
    };
    redis.once('ready', onReady);
  });
}

/**
 * Keys and channels batchline uses, all under one prefix. With `tagged` (on a cluster) the
 * part in braces is the hash tag that picks the key's slot, so that what one script or one
 * MULTI touches shares a slot (a script touching two slots fails with CROSSSLOT) while
 * unrelated keys spread over the cluster:
 *   - a prediction's record and its result channel share `{<tag>}`, the first 8 characters of
 *     its id (`predictionTag`): the finish-once script writes one and publishes on the other;
 *     the predictions of one coalesced job are given ids with the same first 8 characters, so
 *     their records are written, read and finished together, and jobs spread over every slot;
 *   - a queue's BullMQ keys and its admission set share `{<queue>}` (BullMQ's own advice:
 *     hash-tag the queue name, a different tag per queue so queues spread over the nodes);
 *   - the live stats share `{stats}` (one MULTI per process per second);
 *   - a model's drift counts share `{<model@version>}` (read as one pipeline);
 *   - a model's rollout keys (its live policy, its comparisons, its capture stream) share `{<model>}`.
 * On one Redis nothing is tagged: the keys are the ones batchline always wrote.
 */
export function keyspace(prefix: string, tagged = false) {
  const tag = (s: string): string => (tagged ? `{${s}}` : s);
  return {
    tagged,
    prediction: (id: string) => `${prefix}:prediction:${tagged ? predictionKeyPart(id) : id}`,
    resultChannel: (id: string) => `${prefix}:result:${tagged ? predictionKeyPart(id) : id}`,
    /** One per API process; on a cluster its slot (so its shard) follows from the instance id. */
    replyChannel: (instance: string) => `${prefix}:reply:${instance}`,
    /** Broadcasts to every API and worker process (models changed, housekeeping). */
    control: `${prefix}:control`,
    modelsFingerprint: `${prefix}:models:fingerprint`,
    /** Predicted class counts of one model version in one minute. */
    driftCounts: (modelKey: string, minute: number) => `${prefix}:drift:counts:${tag(modelKey)}:${minute}`,
    driftReport: (modelKey: string) => `${prefix}:drift:report:${modelKey}`,
    schedulersRegistered: (hash: string) => `${prefix}:schedulers:${hash}`,
    /** A model's live traffic policy, JSON (core/rollout/policies.ts). */
    rolloutPolicy: (model: string) => `${prefix}:rollout:${tag(model)}:policy`,
    /** The comparison sums of one version pair of a model since the pair began (core/rollout/comparisons.ts). */
    rolloutComparison: (model: string, pair: string) => `${prefix}:rollout:${tag(model)}:compare:${pair}`,
    /** A model's captured payloads: a stream capped by length and age (core/rollout/capture.ts). */
    capture: (model: string) => `${prefix}:capture:${tag(model)}`,
    /** Live workers and the models they serve (one hash; core/control/worker-registry.ts). */
    workers: `${prefix}:workers`,
    /** A client's token bucket (`key:<name>` or `ip:<address>`; core/api/rate-limiter.ts). */
    rateLimit: (client: string) => `${prefix}:ratelimit:${client}`,
    /**
     * The BullMQ queue name of shard `shard` of a pool's `shards` (BullMQ puts `prefix:` in
     * front). Shard 0 is the pool's name, so one shard is the queue batchline always had. On a
     * cluster, shard i's tag is picked so that its slot lies i/shards of the slot space past
     * shard 0's: on masters holding equal runs of slots (as `redis-cli --cluster create` splits
     * them), as many shards as masters land on different masters.
     */
    queueName: (pool: string, shard = 0, shards = 1) =>
      shard === 0 ? tag(pool) : tagged ? `{${spreadTag(pool, shard, shards)}}` : `${pool}-${shard}`,
    /** Admissions to a queue still being added (core/prediction/queues.ts), in its queue's slot. */
    admitting: (queueName: string) => `${prefix}:${queueName}:admitting`,
    /**
     * Predictions beyond the first of each coalesced job still waiting in a queue (a hash: job
     * id to count, and their sum), in its queue's slot: `queue.maxDepth` counts predictions.
     */
    waitingParts: (queueName: string) => `${prefix}:${queueName}:parts`,
    /** The operations view's sums per second and per 5 s step, and the processes seen (core/operations/live-stats.ts). */
    stats: {
      second: (s: number) => `${prefix}:${tag('stats')}:s:${s}`,
      step: (n: number) => `${prefix}:${tag('stats')}:m:${n}`,
      processes: `${prefix}:${tag('stats')}:processes`,
    },
  };
}
export type Keyspace = ReturnType<typeof keyspace>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The hash tag of a prediction's keys on a cluster: the first 8 characters of a UUID id (the
 * predictions of one job share them: core/prediction/record.ts), the whole id otherwise.
 */
export function predictionTag(id: string): string {
  return UUID.test(id) ? id.slice(0, 8) : id;
}

/** `{<tag>}<rest of the id>`: the id stays whole in the key, its tag in braces. */
function predictionKeyPart(id: string): string {
  const tag = predictionTag(id);
  return `{${tag}}${id.slice(tag.length)}`;
}

const SLOTS = 16384;

/**
 * `<pool>-<shard>` or, when its slot is not within half a stride of its place, `<pool>-<shard>.<k>`
 * with the smallest k whose slot is: the same for every process, found in a few tries.
 */
function spreadTag(pool: string, shard: number, shards: number): string {
  const stride = SLOTS / Math.max(shards, 1);
  const want = (calculateSlot(pool) + shard * stride) % SLOTS;
  const near = (slot: number): boolean => Math.min(Math.abs(slot - want), SLOTS - Math.abs(slot - want)) <= stride / 2;
  const plain = `${pool}-${shard}`;
  if (near(calculateSlot(plain))) return plain;
  for (let k = 0; k < 100_000; k++) if (near(calculateSlot(`${plain}.${k}`))) return `${plain}.${k}`;
  return plain;
}

/** The keyspace for a connection: tagged exactly when it is a cluster. */
export function keysOf(redis: RedisClient, prefix: string): Keyspace {
  return keyspace(prefix, isCluster(redis));
}

/**
 * A Lua script kept in its own file, named as BullMQ names its scripts:
 * `<name>-<numberOfKeys>.lua` (`<name>-n.lua`: the caller gives the number of keys first),
 * defined on the connection as the command `batchline:<name>`
 * (a name no Redis command or ioredis method has). The file is read once per process, and
 * ioredis calls the script by EVALSHA after the first time, so the body is not resent and
 * rehashed per call. On a cluster the call goes to the master of its keys' slot.
 * @returns the script as a function of its keys, then its arguments.
 */
export function redisScript<R>(redis: RedisClient, file: URL): (...keysThenArgs: (string | number)[]) => Promise<R> {
  const m = /^(\w+)-(\d+|n)\.lua$/.exec(basename(fileURLToPath(file)));
  if (!m) throw new Error(`script ${file.pathname}: expected a file name like finishOnce-2.lua`);
  const command = `batchline:${m[1]}`;
  const commands = redis as unknown as Record<string, (...args: (string | number)[]) => Promise<R>>;
  if (typeof commands[command] !== 'function')
    redis.defineCommand(command, { ...(m[2] === 'n' ? {} : { numberOfKeys: Number(m[2]) }), lua: scriptText(file) });
  return (...args) => commands[command](...args);
}

const scripts = new Map<string, string>();
function scriptText(file: URL): string {
  let text = scripts.get(file.href);
  if (text === undefined) scripts.set(file.href, (text = readFileSync(file, 'utf8')));
  return text;
}

export interface RetryOptions {
  /** Stop trying (the last error is thrown): the caller is stopping, or nobody waits any more. */
  giveUp: () => boolean;
  /** Called once, at the first failure. */
  onRetry?: (e: Error) => void;
  /** Longest pause between tries; they start at 50 ms and double. @defaultValue 2000 */
  maxDelayMs?: number;
}

/**
 * Runs `op` again while Redis is unreachable (a restart, a connection still coming back):
 * what an outage interrupts is done once Redis is back, instead of failing for a reason that
 * is not the work's own. Any other error is thrown at once.
 */
export async function whileUnreachable<T>(op: () => Promise<T>, options: RetryOptions): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await op();
    } catch (e) {
      if (!isRedisUnavailable(e) || options.giveUp()) throw e;
      if (attempt === 0) options.onRetry?.(e as Error);
      await new Promise((r) => setTimeout(r, Math.min(options.maxDelayMs ?? 2000, 50 * 2 ** attempt)));
    }
  }
}
