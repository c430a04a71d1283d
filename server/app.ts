/**
 * The API process composed, with no transport: the Redis connections, the serving parts of
 * core/api (catalog, predictor, tickets), the operations view and the yoga app with its
 * plugins. server/http.ts and server/ws.ts adapt it to node:http and graphql-ws, the way
 * graphql-ws keeps `makeServer` apart from `use/ws`; tests may call `app.yoga.fetch(...)`.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { createSchema, createYoga, useReadinessCheck, type YogaServerInstance } from 'graphql-yoga';
import { RedisPubSub } from 'graphql-redis-subscriptions';
import { POOLS, type BatchlineConfig } from '../core/config/settings.ts';
import { scanConfigured } from '../core/models/repository.ts';
import { PredictionQueues } from '../core/prediction/queues.ts';
import { ResultStore } from '../core/prediction/result-store.ts';
import { ResultFeed } from '../core/prediction/result-feed.ts';
import { WorkerRegistry } from '../core/control/worker-registry.ts';
import { ModelCatalog } from '../core/api/catalog.ts';
import { Predictor } from '../core/api/predictor.ts';
import { Tickets } from '../core/api/tickets.ts';
import { RateLimiter } from '../core/api/rate-limiter.ts';
import { ANONYMOUS } from '../core/api/authorization.ts';
import { startControlPlane, type ControlPlane } from '../core/api/control-plane.ts';
import { createRedis, isCluster, keysOf, whenReady, type RedisClient } from '../core/redis/connection.ts';
import { resultChannels } from '../core/redis/cluster.ts';
import { LostWork } from '../core/prediction/lost-work.ts';
import { createMetrics } from '../core/telemetry/metrics.ts';
import { requestScope, type Logger } from '../core/telemetry/logger.ts';
import { ServingError } from '../core/errors/registry.ts';
import type { Deadline } from '../core/lifecycle/shutdown.ts';
import { requestIdOf, useRequestLog } from './use-request-log.ts';
import { routeKeyOf, traceIdOf } from './route-headers.ts';
import { resolvers, type RequestContext } from '../resolvers/index.ts';
import { maskError, useClientErrorStatus, useStreamFieldErrors } from './errors.ts';
import { createAuthenticator, useApiKeyAuth, type Authenticator, type AuthServerContext } from './auth.ts';
import { useArmor, useRequestParseErrors } from './armor.ts';
import { parseCache, useCompactValidationErrors } from './parse-cache.ts';
import { useRateLimit } from './rate-limit.ts';
import { graphiqlOptions, renderGraphiQL } from './graphiql.ts';
import { createOps } from './ops.ts';
import { collectQueueDepth, collectWorkers, useMetricsEndpoint } from './use-metrics.ts';
import { useNoIntrospection } from './use-introspection.ts';
import { modelKey } from '../core/prediction/record.ts';
import { Rollout } from '../core/rollout/rollout.ts';
import { InferenceProtocol } from '../core/api/inference-protocol.ts';

/** The server's version, as the inference protocol's server metadata reports it. */
const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const typeDefs = ['schema.graphql', 'ops.graphql', 'rollout.graphql'].map((f) =>
  readFileSync(new URL(`../schema/${f}`, import.meta.url), 'utf8'),
);

/** The server context yoga is called with: node's request when there is one, and the principal. */
export type ServerContext = { req?: IncomingMessage } & AuthServerContext;

export interface App {
  config: BatchlineConfig;
  logger: Logger;
  yoga: YogaServerInstance<ServerContext, RequestContext>;
  auth: Authenticator;
  limiter: RateLimiter;
  catalog: ModelCatalog;
  predictor: Predictor;
  tickets: Tickets;
  rollout: Rollout;
  /** The Open Inference Protocol on the same core (server/oip/ serves it over REST and gRPC). */
  oip: InferenceProtocol;
  /** Counts a refusal (429, 503, 504) answered outside yoga (the inference protocol's doors, the connection cap), for the operations view. */
  countRejection(code: string): void;
  /** True while the request path's Redis connection is up. */
  redisReady(): boolean;
  /**
   * Shutdown, the requests' part: open subscriptions end now with SERVICE_UNAVAILABLE (their
   * clients resubscribe on another replica) and synchronous requests in flight get up to
   * `drainMs` to be answered. Resolves with the number given up on.
   */
  drain(drainMs: number): Promise<number>;
  /**
   * Shutdown, the rest: the control plane, buffered counts, queues, subscriptions, then the
   * connections. Resolves with how Redis was found at the end.
   */
  release(deadline: Deadline): Promise<'ready' | 'unreachable'>;
}

export async function createApp(options: { config: BatchlineConfig; logger: Logger }): Promise<App> {
  const { config, logger } = options;
  // A malformed auth.keys stops the server here, before anything starts.
  const auth = createAuthenticator(config.auth);
  if (!auth.enabled && config.auth.keys.trim()) logger.warn('API keys are configured but auth.enabled is false: every request is let in');
  const repository = await scanConfigured(config, logger);
  logger.info({ models: repository.ready().map((v) => modelKey(v.name, v.version)) }, 'model repository scanned');

  // One Redis or a cluster, as `redis.cluster` says (core/redis/connection.ts); the keys are tagged on a cluster.
  const redis = createRedis(config.redis, 'producer');
  const keys = keysOf(redis, config.redis.prefix);
  // graphql-redis-subscriptions serves the GraphQL subscription and the reply channel alike:
  // one subscriber connection per process, its handlers dispatched by channel. On a cluster the
  // result and reply channels are sharded beside it, on the same connection (resultChannels).
  const pubsub = new RedisPubSub({
    publisher: createRedis(config.redis, 'producer'),
    subscriber: createRedis(config.redis, 'subscriber'),
  });
  const metrics = createMetrics('api');
  for (const pool of POOLS) metrics.queueMaxDepth.set({ pool }, config.queue.maxDepth);
  const store = new ResultStore(redis, keys, config.results.ttlSeconds);
  const feed = new ResultFeed(resultChannels(pubsub), store, keys);
  const queues = new PredictionQueues(redis, config.redis.prefix, config.queue.maxDepth, config.queue.shards);
  const lostWork = new LostWork(queues, store);
  // On a cluster, watches also re-read their record every 5 s: subscriptions move with failovers and slots.
  feed.checkLostWork(lostWork, isCluster(redis) ? 5000 : 0);
  const workers = new WorkerRegistry(redis, config.redis.prefix);
  // The traffic policies (canary, shadow, capture): read by the catalog's routing, fed by the predictor's answers.
  const rollout: Rollout = new Rollout({ redis, keys, logger, registry: metrics.registry, repository: () => catalog.repository });
  const catalog: ModelCatalog = new ModelCatalog({ config, repository, workers, redis, keys, logger, rollout });
  const predictor = new Predictor({ config, catalog, queues, feed, workers, redis, keys, metrics, observe: (o) => rollout.observe(o) });
  const tickets = new Tickets({ config, catalog, predictor, queues, store, feed, metrics, lostWork });
  const ops = createOps({ config, redis, queues, catalog, metrics, authEnabled: auth.enabled, rollout });
  const limiter = new RateLimiter({
    redis,
    prefix: config.redis.prefix,
    ratePerSecond: config.limits.rateLimitPerSecond,
    burst: config.limits.rateLimitBurst,
    timeoutMs: config.limits.rateLimitTimeoutMs,
    logger,
  });
  // Serve as soon as Redis answers; if it is down, start anyway: requests get 503 and
  // /ready fails until it is back (ioredis reconnects and resubscribes by itself).
  const replies = feed.start();
  rollout.start(predictor.runMirror);
  // Live policies are read before the first request (a restarted replica must not serve a canary a gate
  // rolled back), and again whenever the connection comes back (a change announced meanwhile was missed).
  const policies = whenReady(redis, 5000).then(() => rollout.policies.refresh());
  redis.on('ready', () => rollout.policies.refreshQuietly());
  try {
    await Promise.race([
      Promise.all([whenReady(redis, 5000), replies, policies]),
      new Promise((_, reject) => setTimeout(() => reject(new Error('Redis not ready after 5000 ms')), 5000).unref()),
    ]);
  } catch (e) {
    logger.warn({ err: (e as Error).message }, 'Redis unreachable at start; serving 503 until it is back');
    replies.catch(() => {});
    policies.catch(() => {});
  }

  // Control channel (rescans, cache housekeeping) and the periodic maintenance jobs.
  // Not awaited: with Redis down the subscription waits for it, and the API must serve 503s meanwhile.
  let control: ControlPlane | undefined;
  const controlStarting = startControlPlane({ config, logger, redis, pubsub, keys, catalog, predictor, registry: workers, rollout }).then(
    (c) => void (control = c),
    (e: Error) => logger.warn({ err: e.message }, 'control plane not started'),
  );

  const ready = async (): Promise<boolean> => {
    if (catalog.repository.ready().length === 0) return false;
    return (await redis.ping().catch(() => '')) === 'PONG';
  };

  const yoga = createYoga<ServerContext, RequestContext>({
    schema: createSchema({ typeDefs, resolvers }),
    graphqlEndpoint: '/graphql',
    parserAndValidationCache: parseCache(),
    // Off: the check in front of yoga bounds Content-Length, useRequestParseErrors counts chunked bodies.
    maxRequestBodySize: false,
    graphiql: graphiqlOptions(config.http.graphiql),
    renderGraphiQL,
    landingPage: false,
    logging: {
      debug: (...args) => logger.debug({ yoga: args.map(String) }),
      info: (...args) => logger.info({ yoga: args.map(String) }),
      warn: (...args) => logger.warn({ yoga: args.map(String) }),
      // yoga reports every GraphQL error here; ours are mapped and unexpected ones logged in maskError.
      error: (...args) => logger.debug({ yoga: args.map(String) }),
    },
    maskedErrors: { maskError: maskError(logger) },
    context: ({ request, req, principal }) => {
      // Set by useApiKeyAuth (HTTP) or at connection (WebSocket); never missing when auth is on.
      const who = principal ?? (auth.enabled ? undefined : ANONYMOUS);
      if (!who) throw new ServingError('UNAUTHENTICATED');
      return {
        catalog,
        predictor,
        tickets,
        ops: ops.context,
        maintenance: control?.maintenance,
        requestId: requestScope.getStore()?.requestId ?? requestIdOf(request?.headers ?? req?.headers),
        principal: who,
        rollout,
        routeKey: routeKeyOf(request?.headers ?? req?.headers),
        traceId: traceIdOf(request?.headers ?? req?.headers),
      };
    },
    plugins: [
      useMetricsEndpoint(metrics, [
        () => collectWorkers(workers, metrics),
        () => collectQueueDepth(queues, metrics),
        () => catalog.collectDrift(metrics),
        () => rollout.collect(),
      ]),
      ...ops.plugins,
      useClientErrorStatus(),
      useStreamFieldErrors(),
      useRequestLog(),
      useReadinessCheck({ endpoint: '/ready', check: ready }),
      ...(config.http.introspection ? [] : [useNoIntrospection()]),
      useApiKeyAuth(auth),
      useRateLimit(limiter),
      useArmor(config.limits),
      useRequestParseErrors(config.http.maxBodyBytes),
      useCompactValidationErrors(),
    ],
  });

  const redisReady = (): boolean => redis.status === 'ready';
  const oip = new InferenceProtocol({ catalog, predictor, ready, version: VERSION });
  return {
    config,
    logger,
    yoga,
    auth,
    limiter,
    catalog,
    predictor,
    tickets,
    rollout,
    oip,
    countRejection: (code) => ops.countRejection(code),
    redisReady,
    async drain(drainMs) {
      ops.endSubscriptions();
      // Mirrored work has no client: it is taken back, not waited for.
      rollout.stop();
      predictor.abandonMirrors();
      const unanswered = await feed.close(drainMs);
      await ops.close().catch(() => {});
      return unanswered;
    },
    async release(deadline) {
      // Closes that only Redis can finish are not waited for once it is gone.
      const unreachable = (): boolean => !redisReady();
      await deadline.within(controlStarting, 1000, unreachable);
      await deadline.step('maintenance worker', control?.close(), Infinity, unreachable);
      await deadline.step('drift counts', predictor.close(), Infinity, unreachable);
      await deadline.step('rollout figures', rollout.close(), Infinity, unreachable);
      await deadline.step('queue connections', queues.close(), Infinity, unreachable);
      await deadline.step('result subscriptions', pubsub.close(), Infinity, unreachable);
      const state = unreachable() ? 'unreachable' : 'ready';
      for (const r of [redis, pubsub.getPublisher() as RedisClient, pubsub.getSubscriber() as RedisClient]) r.disconnect();
      return state;
    },
  };
}
