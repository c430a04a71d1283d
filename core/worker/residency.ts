/**
 * Which model versions a worker holds in memory, under its budget (`workers.modelMemoryBytes`,
 * docs/RESIDENCY.md). With a budget, a version is loaded when work for it arrives (warmed by
 * the inference thread's warm-up run) into the least busy inference thread only (a load
 * blocks its thread; the others keep running the versions they hold), and the least recently
 * used versions with no work in flight are evicted when the next load would not fit. Pinned
 * versions (`residency.pinned`) are loaded at start and never evicted. Each version's cost is
 * measured as it loads: the growth of the process's resident memory around session creation
 * and warm-up, never less than its file (RSS reads less than that when the allocator reuses
 * pages freed by an eviction).
 *
 * Without a budget (no setting and no container limit) everything is loaded at start and kept,
 * as before; this class then only answers "loaded" and reports sizes.
 */
import { statSync } from 'node:fs';
import { ServingError } from '../errors/registry.ts';
import type { ModelVersion } from '../models/repository.ts';
import type { LoadedModelSpec } from '../runtime/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { CgroupLimits } from './cgroup.ts';

/** Reserve kept out of a derived budget: a quarter of the container's limit, at least this. */
export const MODEL_MEMORY_RESERVE = 256 * 1024 * 1024;

export interface ModelBudget {
  /** Bytes for resident versions; undefined: no budget (everything loaded). */
  bytes?: number;
  /** How the figure was reached, for the start log line and `k8s explain`. */
  explanation: string;
}

const MiB = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;

/** The budget: the setting when given, else the container's memory limit less the reserve, else none. */
export function modelBudget(setting: number, limits: Pick<CgroupLimits, 'memoryBytes'>): ModelBudget {
  if (setting > 0) return { bytes: setting, explanation: `workers.modelMemoryBytes = ${MiB(setting)}` };
  const limit = limits.memoryBytes;
  if (limit === undefined)
    return { explanation: 'no workers.modelMemoryBytes and no container memory limit: every version is loaded at start and kept' };
  const reserve = Math.max(MODEL_MEMORY_RESERVE, Math.floor(limit / 4));
  const bytes = Math.max(0, limit - reserve);
  return {
    bytes,
    explanation: `container memory limit ${MiB(limit)} less a reserve of ${MiB(reserve)} (a quarter, at least ${MiB(MODEL_MEMORY_RESERVE)}) = ${MiB(bytes)}`,
  };
}

/** What the residency needs of the inference pool (core/runtime/inference-pool.ts). */
export interface SessionHost {
  load(
    models: LoadedModelSpec[],
    options?: { oneThread?: boolean },
  ): Promise<{ loaded: string[]; failed: { key: string; error: string }[] }>;
  unload(keys: string[]): Promise<void>;
  /** Inference threads. Under a budget a version is loaded into one of them; without one, into each. */
  readonly size: number;
}

export interface ResidencyEvents {
  loaded(e: { key: string; bytes: number; loadMs: number; evicted: string[]; pinned: boolean }): void;
  evicted(e: { key: string; bytes: number; idleMs: number }): void;
  /** A load waited `ms` for the loads-per-second cap. */
  throttled(e: { key: string; ms: number }): void;
  failed(e: { key: string; code: string; message: string }): void;
  /** The resident set changed: announce it. */
  changed(): void;
}

interface Resident {
  bytes: number;
  lastUsed: number;
  pinned: boolean;
  loadMs: number;
}

export interface ResidentView {
  key: string;
  bytes: number;
  pinned: boolean;
  loadMs: number;
  inFlight: number;
}

export class Residency {
  readonly budget?: number;
  private readonly host: SessionHost;
  private readonly versions: () => ReadonlyMap<string, ModelVersion>;
  private readonly events: ResidencyEvents;
  private readonly rss: () => number;
  private readonly log: Logger;
  private readonly resident = new Map<string, Resident>();
  /** Jobs in hand per version (taken from the queue, not yet answered): such a version is never evicted. */
  private readonly holds = new Map<string, number>();
  private readonly loading = new Map<string, Promise<void>>();
  /** Measured costs, kept after an eviction: the next load of the version makes room for that much first. */
  private readonly measured = new Map<string, number>();
  /** Versions that failed to load here, with the error their requests get. */
  private readonly broken = new Map<string, ServingError>();
  /** Loads (and the evictions that make room for them) run one at a time: each is measured alone. */
  private serial: Promise<unknown> = Promise.resolve();
  /** Wakes a load waiting for a held version to become idle. */
  private released?: () => void;
  private primed = false;
  /** Moving average of load times, for {@link expectedWaitMs}. */
  private recentLoadMs = 50;
  /** Loads start at least this far apart (`workers.maxModelLoadsPerSecond`). */
  private readonly minLoadGapMs: number;
  private lastLoadAt = -Infinity;
  loads = 0;
  evictions = 0;
  /** Loads per version since the worker started (evicted ones included). */
  readonly loadsByVersion = new Map<string, number>();
  /** The most the resident versions ever added up to. */
  peakBytes = 0;

  constructor(o: {
    budget?: number;
    host: SessionHost;
    versions: () => ReadonlyMap<string, ModelVersion>;
    events: ResidencyEvents;
    log: Logger;
    rss?: () => number;
    /** Most loads started per second; 0 or absent: no cap. */
    maxLoadsPerSecond?: number;
  }) {
    this.budget = o.budget;
    this.minLoadGapMs = o.maxLoadsPerSecond ? 1000 / o.maxLoadsPerSecond : 0;
    this.host = o.host;
    this.versions = o.versions;
    this.events = o.events;
    this.log = o.log;
    this.rss = o.rss ?? (() => process.memoryUsage.rss());
  }

  /** True while a load runs or waits: a new cold version would wait behind it. */
  get busy(): boolean {
    return this.loading.size > 0;
  }

  /** About how long the loads in hand will take: their count times the recent load time. */
  expectedWaitMs(): number {
    return this.loading.size * this.recentLoadMs;
  }

  /**
   * Starts loading `key` in the background, for a job handed back to the queue until it is
   * resident (nothing holds it meanwhile: freshly loaded, it is the last idle one evicted).
   * A failure is kept for the job to meet when it comes back.
   */
  prefetch(key: string): Promise<void> {
    if (!this.onDemand || this.resident.has(key) || this.broken.has(key)) return Promise.resolve();
    let pending = this.loading.get(key);
    if (!pending) {
      pending = this.enqueue(() => this.loadOne(key, false)).finally(() => this.loading.delete(key));
      this.loading.set(key, pending);
    }
    return pending.catch(() => {});
  }

  /** True when versions load on demand under a budget. */
  get onDemand(): boolean {
    return this.budget !== undefined;
  }

  get usedBytes(): number {
    let sum = 0;
    for (const r of this.resident.values()) sum += r.bytes;
    return sum;
  }

  isResident(key: string): boolean {
    return this.resident.has(key);
  }

  view(): ResidentView[] {
    return [...this.resident].map(([key, r]) => ({
      key,
      bytes: r.bytes,
      pinned: r.pinned,
      loadMs: r.loadMs,
      inFlight: this.holds.get(key) ?? 0,
    }));
  }

  /** A job for `key` is in hand: the version is not evicted until {@link release}. */
  hold(key: string): void {
    this.holds.set(key, (this.holds.get(key) ?? 0) + 1);
  }

  release(key: string): void {
    const n = (this.holds.get(key) ?? 1) - 1;
    if (n > 0) this.holds.set(key, n);
    else this.holds.delete(key);
    const r = this.resident.get(key);
    if (r) r.lastUsed = performance.now();
    if (n <= 0) this.released?.();
  }

  /**
   * Records versions loaded outside on-demand loading (at start without a budget, by a reload),
   * with the cost measured around that load split evenly, never under their files.
   */
  adopt(keys: string[], rssGrowth: number, pinned = false): void {
    const floors = keys.map((k) => this.floor(k));
    const total = floors.reduce((a, b) => a + b, 0);
    keys.forEach((key, i) => {
      const bytes = Math.max(floors[i], total > 0 ? Math.round((rssGrowth * floors[i]) / total) : 0);
      this.resident.set(key, { bytes, lastUsed: performance.now(), pinned, loadMs: 0 });
      this.measured.set(key, bytes);
    });
    this.peakBytes = Math.max(this.peakBytes, this.usedBytes);
    this.events.changed();
  }

  /**
   * Resolves once `key` is loaded here, with the milliseconds the caller waited for it (0 when
   * it was resident). Rejects with MODEL_TOO_LARGE when the version cannot fit in the whole
   * budget, MODEL_LOAD_FAILED when its file does not load. The caller holds `key` first.
   */
  async ensure(key: string): Promise<number> {
    const r = this.resident.get(key);
    if (r || !this.onDemand) {
      if (r) r.lastUsed = performance.now();
      return 0;
    }
    const broken = this.broken.get(key);
    if (broken) throw broken;
    const t0 = performance.now();
    let pending = this.loading.get(key);
    if (!pending) {
      pending = this.enqueue(() => this.loadOne(key, false)).finally(() => this.loading.delete(key));
      this.loading.set(key, pending);
    }
    await pending;
    return performance.now() - t0;
  }

  /**
   * Loads the pinned versions at start. Throws, naming them and their sizes, when they alone
   * exceed the budget: first from their files (before loading anything), then as measured.
   */
  async loadPinned(keys: string[]): Promise<void> {
    if (!this.onDemand || keys.length === 0) return;
    const budget = this.budget!;
    const sized = (f: (k: string) => number): string => keys.map((k) => `${k} (${MiB(f(k))})`).join(', ');
    const estimate = keys.reduce((a, k) => a + this.floor(k), 0);
    if (estimate > budget)
      throw new Error(
        `pinned model versions need at least ${MiB(estimate)}, over the model memory budget of ${MiB(budget)}: ${sized((k) => this.floor(k))}`,
      );
    for (const key of keys) await this.enqueue(() => this.loadOne(key, true));
    const used = this.usedBytes;
    if (used > budget)
      throw new Error(
        `pinned model versions take ${MiB(used)} as loaded, over the model memory budget of ${MiB(budget)}: ${sized((k) => this.resident.get(k)?.bytes ?? 0)}`,
      );
  }

  private enqueue<T>(step: () => Promise<T>): Promise<T> {
    const next = this.serial.then(step, step);
    this.serial = next.catch(() => {});
    return next;
  }

  /** The least a version costs: its file, once per thread holding it (one under a budget, each without one). */
  private floor(key: string): number {
    const v = this.versions().get(key);
    if (!v) return 0;
    try {
      return statSync(v.path).size * (this.onDemand ? 1 : Math.max(1, this.host.size));
    } catch {
      return 0;
    }
  }

  private async loadOne(key: string, pinned: boolean): Promise<void> {
    if (this.resident.has(key)) return;
    const v = this.versions().get(key);
    if (!v) throw new ServingError('MODEL_NOT_READY', `this worker does not serve ${key}`);
    const budget = this.budget!;
    const need = Math.max(this.measured.get(key) ?? 0, this.floor(key));
    if (need > budget) throw this.tooLarge(key, need, budget);
    const evicted = pinned ? [] : await this.makeRoom(need, budget, key);
    const spec = [{ key, path: v.path, config: v.config }];
    const gap = this.lastLoadAt + this.minLoadGapMs - performance.now();
    if (gap > 0) {
      // Capped: the job waits; resident versions keep serving meanwhile.
      await new Promise((r) => setTimeout(r, gap));
      this.events.throttled({ key, ms: gap });
    }
    this.lastLoadAt = performance.now();
    this.log.info({ model: key, expectBytes: need, usedBytes: this.usedBytes, budgetBytes: budget }, 'loading model version');
    if (!this.primed) {
      // The first session a process creates also sets up onnxruntime itself (its environment,
      // thread pools, arenas: tens of MB once). Load and release it once so that is not charged to the version.
      this.primed = true;
      const first = await this.host.load(spec, { oneThread: true });
      if (first.loaded.includes(key)) await this.host.unload([key]);
    }
    const before = this.rss();
    const t0 = performance.now();
    const { loaded, failed } = await this.host.load(spec, { oneThread: true });
    const loadMs = performance.now() - t0;
    this.recentLoadMs = 0.8 * this.recentLoadMs + 0.2 * loadMs;
    if (!loaded.includes(key)) {
      const reason = failed.find((f) => f.key === key)?.error ?? 'not loaded';
      // The client gets the code and the version, never the runtime's own text (paths, internals): that goes to the log.
      const err = new ServingError(
        'MODEL_LOAD_FAILED',
        `${key} failed to load in the worker (corrupt or incompatible file; the worker's log has the reason)`,
      );
      this.broken.set(key, err);
      this.events.failed({ key, code: err.code, message: `${key} failed to load: ${reason}` });
      throw err;
    }
    // The most any load of it measured: a reload into pages freed by an eviction reads less growth than it costs.
    const bytes = Math.max(this.rss() - before, this.floor(key), this.measured.get(key) ?? 0);
    this.measured.set(key, bytes);
    this.resident.set(key, { bytes, lastUsed: performance.now(), pinned, loadMs });
    this.loads++;
    this.loadsByVersion.set(key, (this.loadsByVersion.get(key) ?? 0) + 1);
    if (!pinned && bytes > budget) {
      // Measured larger than the whole budget (its file said less): out again, and refused from now on.
      this.resident.delete(key);
      await this.host.unload([key]);
      throw this.tooLarge(key, bytes, budget);
    }
    // Measured more than its estimate: evict more idle versions now.
    if (!pinned && this.usedBytes > budget) evicted.push(...(await this.makeRoom(0, budget, key)));
    this.peakBytes = Math.max(this.peakBytes, this.usedBytes);
    this.events.loaded({ key, bytes, loadMs, evicted, pinned });
    this.events.changed();
  }

  private tooLarge(key: string, bytes: number, budget: number, of = "the worker's whole model memory budget"): ServingError {
    const err = new ServingError(
      'MODEL_TOO_LARGE',
      `${key} needs ${MiB(bytes)} resident, more than the ${MiB(budget)} of ${of} (workers.modelMemoryBytes)`,
    );
    this.broken.set(key, err);
    this.events.failed({ key, code: err.code, message: err.message });
    return err;
  }

  /**
   * Evicts least recently used idle, unpinned versions until `need` more bytes fit. When the
   * versions left are all held, waits for one to be released (work in flight always finishes).
   */
  private async makeRoom(need: number, budget: number, loading: string): Promise<string[]> {
    const evicted: string[] = [];
    for (;;) {
      if (this.usedBytes + need <= budget) return evicted;
      const idle = [...this.resident]
        .filter(([k, r]) => k !== loading && !r.pinned && !this.holds.has(k))
        .sort((a, b) => a[1].lastUsed - b[1].lastUsed);
      if (idle.length === 0) {
        const evictable = [...this.resident].some(([k, r]) => k !== loading && !r.pinned);
        if (!evictable) {
          // Only pinned versions (or nothing) left: the version can never fit beside them.
          if (need > 0)
            throw this.tooLarge(loading, need, budget - this.usedBytes, 'the model memory budget left beside the pinned versions');
          return evicted;
        }
        await new Promise<void>((resolve) => (this.released = resolve));
        this.released = undefined;
        continue;
      }
      const [key, r] = idle[0];
      this.resident.delete(key);
      await this.host.unload([key]);
      this.evictions++;
      evicted.push(key);
      this.events.evicted({ key, bytes: r.bytes, idleMs: performance.now() - r.lastUsed });
      this.log.debug({ model: key, bytes: r.bytes }, 'evicted');
    }
  }
}
