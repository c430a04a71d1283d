/**
 * The traffic policy each model runs under, as this API process knows it. A model's
 * config.yaml states one; an admin mutation or a gate's rollback stores a live one in Redis
 * (`<prefix>:rollout:{<model>}:policy`) over it, and announces it on the control channel, so
 * every API replica re-reads it within moments, and a replica that starts (or restarts) reads
 * it before it serves.
 *
 * Which wins: the live policy, as long as the config.yaml's `rollout:` and `capture:` are still
 * the ones it was made over (its `basis`). Editing them in the file is a newer decision than
 * the live policy and replaces it; until then a canary a gate rolled back stays rolled back,
 * whatever the file says and however often a replica restarts.
 *
 * Changes are compare-and-set on the live policy's revision (one script), so an admin's change
 * and a gate's rollback never overwrite each other unseen.
 */
import { ServingError, asServingError } from '../errors/registry.ts';
import { redisScript, type Keyspace, type RedisClient } from '../redis/connection.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { ModelRepository } from '../models/repository.ts';
import type { ControlMessage } from '../control/maintenance.ts';
import { configPolicy, type TrafficPolicy } from '../models/rollout-policy.ts';

const SET = new URL('./scripts/setPolicy-1.lua', import.meta.url);
/** Tries of a change whose compare-and-set lost to another writer. */
const CHANGE_TRIES = 5;

export interface TrafficPoliciesDeps {
  redis: RedisClient;
  keys: Keyspace;
  logger: Logger;
  /** The repository this process serves now (it holds each model's config policy). */
  repository: () => ModelRepository;
}

export class TrafficPolicies {
  private readonly deps: TrafficPoliciesDeps;
  /** Live policies as last read from Redis, by model (whether or not they still win). */
  private readonly stored = new Map<string, TrafficPolicy>();
  /** The config policies of one repository, made once per scan (a request only looks one up). */
  private configs?: { repository: ModelRepository; byModel: Map<string, TrafficPolicy> };
  private readonly set: (key: string, revision: number, json: string) => Promise<number>;

  constructor(deps: TrafficPoliciesDeps) {
    this.deps = deps;
    this.set = redisScript<number>(deps.redis, SET);
  }

  private configOf(model: string): TrafficPolicy | undefined {
    const repository = this.deps.repository();
    if (this.configs?.repository !== repository) {
      const byModel = new Map<string, TrafficPolicy>();
      for (const [name, spec] of repository.policies) byModel.set(name, configPolicy(name, spec.rollout, spec.capture));
      this.configs = { repository, byModel };
    }
    return this.configs.byModel.get(model);
  }

  /** The policy `model` runs under now; undefined for a model the repository does not have (or whose sections failed). */
  get(model: string): TrafficPolicy | undefined {
    const config = this.configOf(model);
    if (!config) return undefined;
    const live = this.stored.get(model);
    return live && live.basis === config.basis ? live : config;
  }

  /** Re-reads the live policies of `models` (every model of the repository by default). */
  async refresh(models: string[] = [...this.deps.repository().policies.keys()]): Promise<void> {
    const { redis, keys } = this.deps;
    const found = await Promise.all(models.map((m) => redis.get(keys.rolloutPolicy(m))));
    models.forEach((m, i) => {
      const json = found[i];
      if (json === null) return void this.stored.delete(m);
      try {
        this.stored.set(m, JSON.parse(json) as TrafficPolicy);
      } catch (e) {
        this.deps.logger.error({ model: m, err: (e as Error).message }, 'live traffic policy unreadable; the config.yaml one applies');
        this.stored.delete(m);
      }
    });
  }

  /** Refreshes without failing: a control message's handler (Redis trouble is logged; the next poll catches up). */
  refreshQuietly(models?: string[]): void {
    this.refresh(models).catch((e: Error) => this.deps.logger.warn({ err: e.message, models }, 'traffic policies not re-read'));
  }

  /**
   * Stores `mutate(current)` as the model's live policy, revision-checked against concurrent
   * writers (retried over a fresh read), tells every replica, and returns it. `mutate` may
   * throw a ServingError (a refused change).
   */
  async change(model: string, by: string, mutate: (current: TrafficPolicy) => Partial<TrafficPolicy>): Promise<TrafficPolicy> {
    const { keys, logger } = this.deps;
    try {
      for (let attempt = 0; attempt < CHANGE_TRIES; attempt++) {
        await this.refresh([model]);
        const current = this.get(model);
        if (!current) throw new ServingError('MODEL_NOT_FOUND', `no model named '${model}'`);
        const storedRevision = this.stored.get(model)?.revision ?? 0;
        const next: TrafficPolicy = {
          ...current,
          ...mutate(current),
          model,
          source: 'live',
          revision: storedRevision + 1,
          basis: this.configOf(model)!.basis,
          updatedAt: Date.now(),
          updatedBy: by,
        };
        if ((await this.set(keys.rolloutPolicy(model), storedRevision, JSON.stringify(next))) >= 0) continue;
        this.stored.set(model, next);
        await this.announce(model);
        logger.info({ model, revision: next.revision, by, rollout: next.rollout, capture: next.capture }, 'traffic policy changed');
        return next;
      }
    } catch (e) {
      throw asServingError(e);
    }
    throw new ServingError('SERVICE_UNAVAILABLE', `the traffic policy of '${model}' kept changing under this change; try again`, {
      retryAfterSeconds: 1,
    });
  }

  /** Drops the live policy: the model's config.yaml applies again. */
  async reset(model: string, by: string): Promise<TrafficPolicy> {
    const { keys, logger } = this.deps;
    try {
      for (let attempt = 0; attempt < CHANGE_TRIES; attempt++) {
        await this.refresh([model]);
        if (!this.get(model)) throw new ServingError('MODEL_NOT_FOUND', `no model named '${model}'`);
        if ((await this.set(keys.rolloutPolicy(model), this.stored.get(model)?.revision ?? 0, '')) >= 0) continue;
        this.stored.delete(model);
        await this.announce(model);
        logger.info({ model, by }, 'live traffic policy dropped; the config.yaml one applies');
        return this.get(model)!;
      }
    } catch (e) {
      throw asServingError(e);
    }
    throw new ServingError('SERVICE_UNAVAILABLE', `the traffic policy of '${model}' kept changing; try again`, { retryAfterSeconds: 1 });
  }

  private async announce(model: string): Promise<void> {
    const { redis, keys } = this.deps;
    await redis.publish(keys.control, JSON.stringify({ type: 'rollout-changed', model } satisfies ControlMessage));
  }
}
