/**
 * The models this API process knows: the repository it scanned, which versions live workers
 * serve, and their drift reports. Resolving a name and version to a servable model, with the
 * 404 or 503 that fits, happens here and nowhere else: `route` is what every door that runs a
 * request calls (the version its traffic policy gives a request that names none: stable,
 * canary, and a shadow run to compare), `resolve` what reads a version without running it.
 */
import type { RedisClient } from '../redis/connection.ts';
import { ServingError, asServingError } from '../errors/registry.ts';
import type { BatchlineConfig } from '../config/settings.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { Keyspace } from '../redis/connection.ts';
import type { Metrics } from '../telemetry/metrics.ts';
import { scanConfigured, type ModelRepository, type ModelVersion } from '../models/repository.ts';
import { readDriftReport, type DriftReport } from '../drift/monitor.ts';
import { modelKey } from '../prediction/record.ts';
import type { WorkerRegistry } from '../control/worker-registry.ts';
import { chooseRoute } from '../rollout/router.ts';
import type { Route, Rollout } from '../rollout/rollout.ts';

export interface ModelInfo extends ModelVersion {
  /** Live workers serving this version. */
  workers: number;
  ready: boolean;
  /** Current batch row limit reported by a worker (adaptive policies move it). */
  batchLimit?: number;
  /** Execution providers of the live workers serving it, each once. */
  executionProviders: string[];
  /** The live workers holding it in memory, and its measured size there (docs/RESIDENCY.md). */
  residency: { loadedOn: string[]; residentBytes?: number; lastLoadMs?: number; loads: number };
}

export interface ModelCatalogDeps {
  config: BatchlineConfig;
  repository: ModelRepository;
  workers: WorkerRegistry;
  redis: RedisClient;
  keys: Keyspace;
  logger: Logger;
  /** Traffic policies (canary, shadow); without it every request that names no version gets the newest. */
  rollout?: Pick<Rollout, 'policies' | 'routed'>;
}

export class ModelCatalog {
  private readonly deps: ModelCatalogDeps;
  /** Replaced as a whole on a rescan, so a request sees one repository throughout. */
  repository: ModelRepository;

  constructor(deps: ModelCatalogDeps) {
    this.deps = deps;
    this.repository = deps.repository;
  }

  /** Every model version in the repository, with its live worker count. */
  async models(): Promise<ModelInfo[]> {
    const alive = await this.deps.workers.alive().catch(() => []);
    return this.repository.versions.map((v) => {
      const key = modelKey(v.name, v.version);
      const serving = alive.filter((w) => w.models.includes(key));
      const batchLimit = serving.map((w) => w.batching?.[key]?.limit).find((l) => l !== undefined);
      const executionProviders = [...new Set(serving.map((w) => w.executionProvider))].sort();
      const held = serving.flatMap((w) => {
        const r = w.residency?.resident.find((e) => e.key === key);
        return r ? [{ id: w.id, ...r }] : [];
      });
      const residency = {
        loadedOn: held.map((h) => h.id).sort(),
        residentBytes: held.length ? Math.max(...held.map((h) => h.bytes)) : undefined,
        lastLoadMs: held.length ? held[held.length - 1].loadMs : undefined,
        loads: serving.reduce((a, w) => a + (w.residency?.loadsByVersion?.[key] ?? 0), 0),
      };
      return {
        ...v,
        workers: serving.length,
        ready: v.status === 'READY' && serving.length > 0,
        batchLimit,
        executionProviders,
        residency,
      };
    });
  }

  /**
   * Resolves a model and version, or throws the 404 / 503 that fits. Without a version, the
   * stable one: the version its traffic policy pins, else the newest ready one.
   */
  resolve(model: string, version?: string | null): ModelVersion {
    if (!this.repository.has(model)) throw new ServingError('MODEL_NOT_FOUND', `no model named '${model}'`);
    const pinned = version ? undefined : this.deps.rollout?.policies.get(model)?.rollout.stable;
    const mv = this.repository.find(model, version || pinned);
    if (!mv)
      throw pinned
        ? new ServingError('MODEL_NOT_READY', `model '${model}': its rollout's stable version '${pinned}' is not in the repository`)
        : new ServingError('MODEL_VERSION_NOT_FOUND', `model '${model}' has no version '${version}'`);
    if (mv.status !== 'READY')
      throw new ServingError('MODEL_NOT_READY', `model '${model}' version ${mv.version} failed to load: ${mv.error}`);
    return mv;
  }

  /**
   * The version a request to run `model` goes to, by every door (predict, submit, the
   * inference protocol): the one named, or the one the model's traffic policy chooses
   * (core/rollout/router.ts), sticky by `routeKey` when one is given; with the run on a
   * second version to compare, when one is sampled.
   */
  route(model: string, version?: string | null, routeKey?: string | null): Route {
    const policy = this.deps.rollout?.policies.get(model);
    let route: Route;
    if (version) route = { mv: this.resolve(model, version), route: 'named', policy };
    else if (!policy) {
      const mv = this.resolve(model);
      route = { mv, route: 'stable', stable: mv.version };
    } else {
      const stable = this.resolve(model);
      const choice = chooseRoute({
        model,
        stable: stable.version,
        policy: policy.rollout,
        ready: (v) => this.repository.find(model, v)?.status === 'READY',
        routeKey,
      });
      const find = (v: string): ModelVersion => (v === stable.version ? stable : this.repository.find(model, v)!);
      route = {
        mv: find(choice.version),
        route: choice.route,
        stable: stable.version,
        policy,
        ...(choice.mirror ? { mirror: { mv: find(choice.mirror.version), kind: choice.mirror.kind } } : {}),
      };
    }
    this.deps.rollout?.routed(route);
    return route;
  }

  /** The name a request's metrics are labelled with: unknown names share one label. */
  metricLabel(model: string): string {
    return this.repository.has(model) ? model : '(unknown)';
  }

  /** Rescans the model repository (a new version was dropped in); returns the new view. */
  async reload(): Promise<ModelRepository> {
    const { config, logger } = this.deps;
    this.repository = await scanConfigured(config, logger);
    logger.info({ models: this.repository.ready().map((v) => modelKey(v.name, v.version)) }, 'model repository rescanned');
    return this.repository;
  }

  /** The latest drift report of a model version (the newest ready one by default). */
  async drift(model: string, version?: string | null): Promise<DriftReport | undefined> {
    const mv = this.resolve(model, version);
    try {
      return await readDriftReport(this.deps.redis, this.deps.keys, modelKey(mv.name, mv.version));
    } catch (e) {
      throw asServingError(e);
    }
  }

  /** Drift gauges from the stored reports, for the metrics endpoint. */
  async collectDrift(metrics: Metrics): Promise<void> {
    for (const v of this.repository.ready()) {
      const r = await readDriftReport(this.deps.redis, this.deps.keys, modelKey(v.name, v.version));
      if (!r || r.status === 'INSUFFICIENT_DATA') continue;
      metrics.driftPValue.set({ model: v.name, version: v.version }, r.pValue);
      metrics.driftStatistic.set({ model: v.name, version: v.version }, r.statistic);
      metrics.driftAlpha.set({ model: v.name, version: v.version }, r.alpha);
    }
  }
}
