/**
 * The control channel, as both processes hear it: one broadcast channel (`keys.control`,
 * published by core/control/maintenance.ts) telling every API and worker process that the model
 * repository changed, or that housekeeping ran, and API processes that a model's traffic
 * policy changed (core/rollout/policies.ts). Both subscribe through graphql-redis-
 * subscriptions' RedisPubSub: the API already holds one for the GraphQL subscription and
 * the synchronous replies, and sharing its parser and reconnect handling means the worker
 * decodes the same messages the same way. A rescan is chained after the one before, never
 * run twice at once, and skipped when the repository already has the announced fingerprint.
 */
import type { RedisPubSub } from 'graphql-redis-subscriptions';
import type { Keyspace } from '../redis/connection.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { ControlMessage } from './maintenance.ts';

export interface ControlHandlers {
  /** The fingerprint of the repository this process serves now. */
  fingerprint(): string;
  /** Rescan and load what is new. */
  reload(): Promise<unknown>;
  housekeeping?(): void;
  /** A model's live traffic policy changed. */
  rolloutChanged?(model: string): void;
  /**
   * Every poll's announcement, changed or not: a process that missed a message while its
   * subscriber reconnected catches up here (the poll runs every few seconds).
   */
  polled?(): void;
}

export interface ControlSubscription {
  /** Unsubscribes, then waits for a rescan in progress. */
  close(): Promise<void>;
}

export async function subscribeControl(
  pubsub: RedisPubSub,
  keys: Keyspace,
  handlers: ControlHandlers,
  logger: Logger,
): Promise<ControlSubscription> {
  let reloading: Promise<void> = Promise.resolve();
  const subId = await pubsub.subscribe<ControlMessage>(keys.control, (msg) => {
    if (msg.type === 'models-changed') {
      handlers.polled?.();
      if (msg.fingerprint === handlers.fingerprint()) return;
      reloading = reloading
        .then(async () => void (await handlers.reload()))
        .catch((e: Error) => logger.error({ err: e.message }, 'repository rescan failed'));
    } else if (msg.type === 'housekeeping') handlers.housekeeping?.();
    else if (msg.type === 'rollout-changed') handlers.rolloutChanged?.(msg.model);
  });
  return {
    async close() {
      pubsub.unsubscribe(subId);
      await reloading;
    },
  };
}
