/**
 * What an API process does besides answering requests: it listens on the control channel
 * (rescan the repository when the poll found a change; purge the cache on housekeeping)
 * and, unless disabled, runs the maintenance worker (core/control/maintenance.ts).
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
}): Promise<ControlPlane> {
  const { config, logger, pubsub, keys, catalog } = deps;
  const control = await subscribeControl(
    pubsub,
    keys,
    {
      fingerprint: () => catalog.repository.fingerprint,
      reload: () => catalog.reload(),
      housekeeping: () => logger.debug({ purged: deps.predictor.purgeCache() }, 'cache housekeeping'),
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
