/**
 * Which workers are alive and which models they serve: each worker refreshes its entry in
 * one Redis hash; entries past their expiry are ignored (and pruned by readers).
 */
import type { RedisClient } from '../redis/connection.ts';
import { keyspace } from '../redis/connection.ts';

export interface WorkerEntry {
  id: string;
  pool: string;
  models: string[];
  /** The provider the worker's sessions run on (cpu, cuda, webgpu; `none` before it has models to decide with). */
  executionProvider: string;
  /** What was asked for and the providers skipped before the one it runs, with why. */
  providerChoice?: { requested: string; skipped: { provider: string; reason: string }[] };
  /** Live batching policy and row limit per model key. */
  batching?: Record<string, { policy: string; limit: number }>;
  /**
   * What the worker holds in memory (docs/RESIDENCY.md). `models` lists every version it
   * serves (loading on demand those not resident); `resident` those loaded now, with the bytes
   * measured as each loaded. `budgetBytes` is null without a budget (everything loaded).
   */
  residency?: WorkerResidency;
  /** Under `queue.placement: model`: the lanes (shards of the pool's queue) it consumes now. */
  lanes?: number[];
  /** Jobs it has in hand and the most it takes at once: its load, for the lane rule (core/worker/placement.ts). */
  jobs?: { inHand: number; concurrency: number };
  expiresAt: number;
}

export interface WorkerResidency {
  budgetBytes: number | null;
  usedBytes: number;
  resident: { key: string; bytes: number; pinned: boolean; loadMs: number }[];
  /** Loads and evictions since the worker started. */
  loads: number;
  /** Loads per version since the worker started (each was a cold start for the jobs that waited for it). */
  loadsByVersion?: Record<string, number>;
  evictions: number;
  /** Jobs handed back to the queue while their version waited to load behind others. */
  deferredJobs?: number;
  /** The most its resident versions ever added up to. */
  peakBytes: number;
}

export class WorkerRegistry {
  private readonly redis: RedisClient;
  private readonly key: string;

  constructor(redis: RedisClient, prefix: string) {
    this.redis = redis;
    this.key = keyspace(prefix).workers;
  }

  async announce(entry: Omit<WorkerEntry, 'expiresAt'>, ttlMs: number): Promise<void> {
    await this.redis.hset(this.key, entry.id, JSON.stringify({ ...entry, expiresAt: Date.now() + ttlMs }));
  }

  async withdraw(id: string): Promise<void> {
    await this.redis.hdel(this.key, id);
  }

  /** Entries in the registry, dead ones included. */
  async size(): Promise<number> {
    return this.redis.hlen(this.key);
  }

  /**
   * Whether a live worker serves `modelKey`, from a view of the registry at most `maxAgeMs`
   * old. A "no" is checked against a fresh read, so a worker or version that just appeared is
   * seen at once; a "no" that a fresh read confirmed stands for 250 ms, so a pool without
   * workers does not cost a read per request.
   */
  async serves(modelKey: string, maxAgeMs = 1000): Promise<boolean> {
    const has = (): boolean => this.view!.entries.some((e) => e.expiresAt > Date.now() && e.models.includes(modelKey));
    if (this.view && Date.now() - this.view.at < maxAgeMs && has()) return true;
    const confirmed = this.misses.get(modelKey);
    if (confirmed !== undefined && Date.now() - confirmed < 250) return false;
    this.view = { at: Date.now(), entries: await this.alive() };
    if (has()) {
      this.misses.delete(modelKey);
      return true;
    }
    this.misses.set(modelKey, Date.now());
    return false;
  }

  private view?: { at: number; entries: WorkerEntry[] };
  private readonly misses = new Map<string, number>();

  async alive(): Promise<WorkerEntry[]> {
    const all = await this.redis.hgetall(this.key);
    const now = Date.now();
    const alive: WorkerEntry[] = [];
    const dead: string[] = [];
    for (const [id, json] of Object.entries(all)) {
      const e = JSON.parse(json) as WorkerEntry;
      if (e.expiresAt > now) alive.push(e);
      else dead.push(id);
    }
    if (dead.length) await this.redis.hdel(this.key, ...dead).catch(() => {});
    return alive;
  }
}
