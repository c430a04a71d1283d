/**
 * What an API process does besides answering requests: it listens on the control channel
 * (rescan the repository when the poll found a change; purge the cache on housekeeping;
 * re-read a model's traffic policy when it changed, and every policy on each poll, which heals
 * a message missed while reconnecting) and, unless disabled, runs the maintenance worker
 * (core/control/maintenance.ts), the rollout's gates included.
 */
import type { RedisPubSub } from 'graphql-redis-subscriptions';
import type { RedisClient } from '../redis/connection.ts';
import type { BatchlineConfig } from '../config/settings.ts';
import type { Logger } from '../telemetry/logger.ts';
import { Maintenance } from '../control/maintenance.ts';
import { subscribeControl } from '../control/channel.ts';
import type { ModelCatalog } from './catalog.ts';
import type { Predictor } from './predictor.ts';
import type { Keyspace } from '../redis/connection.ts';
import type { WorkerRegistry } from '../control/worker-registry.ts';
import type { Rollout } from '../rollout/rollout.ts';

export interface ControlPlane {
  maintenance: Maintenance;
  close(): Promise<void>;
}

export async function startControlPlane(deps: {
  config: BatchlineConfig;
  logger: Logger;
  redis: RedisClient;
  pubsub: RedisPubSub;
  keys: Keyspace;
  catalog: ModelCatalog;
  predictor: Pick<Predictor, 'purgeCache'>;
  registry: WorkerRegistry;
  rollout?: Pick<Rollout, 'policies' | 'checkGates'>;
}): Promise<ControlPlane> {
  const { config, logger, pubsub, keys, catalog, rollout } = deps;
  const control = await subscribeControl(
    pubsub,
    keys,
    {
      fingerprint: () => catalog.repository.fingerprint,
      reload: async () => {
        await catalog.reload();
        // New models bring policies of their own, and old live ones may lose to a changed config.yaml.
        rollout?.policies.refreshQuietly();
      },
      housekeeping: () => logger.debug({ purged: deps.predictor.purgeCache() }, 'cache housekeeping'),
      rolloutChanged: (model) => rollout?.policies.refreshQuietly([model]),
      polled: () => rollout?.policies.refreshQuietly(),
    },
    logger,
  );
  const maintenance = new Maintenance({
    config,
    redis: deps.redis,
    keys,
    logger,
    registry: deps.registry,
    repository: () => catalog.repository,
    ...(rollout ? { rolloutGates: () => rollout.checkGates() } : {}),
  });
  let retry: NodeJS.Timeout | undefined;
  const start = async (): Promise<void> => {
    try {
      await maintenance.start();
    } catch (e) {
      // Redis may be down at start; the schedulers will be registered once it is back.
      logger.warn({ err: (e as Error).message }, 'maintenance not started; retrying in 5 s');
      retry = setTimeout(() => void start(), 5000);
      retry.unref();
    }
  };
  if (config.maintenance.enabled) await start();
  return {
    maintenance,
    async close() {
      clearTimeout(retry);
      await control.close();
      await maintenance.close();
    },
  };
}
