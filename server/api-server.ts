/**
 * The API process: graphql-yoga over node:http, GraphQL over HTTP and SSE (yoga) and over
 * WebSocket (graphql-ws, `graphql-transport-ws`) on the same path, plus /health, /ready and
 * /metrics. Everything about predictions is delegated to PredictionService.
 */
import { createServer, type Server, type IncomingMessage } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createSchema, createYoga, useReadinessCheck, type Plugin } from 'graphql-yoga';
import { NoSchemaIntrospectionCustomRule, type GraphQLError, type GraphQLFormattedError } from 'graphql';
import { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/use/ws';
import { RedisPubSub } from 'graphql-redis-subscriptions';
import type { BatchlineConfig } from '../core/config.ts';
import { scanConfigured } from '../core/model-repository.ts';
import { PredictionQueues } from '../core/prediction/queues.ts';
import { ResultStore } from '../core/prediction/result-store.ts';
import { ResultFeed } from '../core/prediction/result-feed.ts';
import { PredictionService } from '../core/api/prediction-service.ts';
import { WorkerRegistry } from '../core/prediction/worker-registry.ts';
import { createRedis, isCluster, keysOf, whenReady, type RedisClient } from '../core/redis.ts';
import { resultChannels } from '../core/redis-cluster.ts';
import { LostWork } from '../core/prediction/lost-work.ts';
import { createMetrics } from '../core/metrics.ts';
import { requestScope, type Logger } from '../core/logger.ts';
import { logWhenFinished, requestIdOf, useRequestLog, wsRequestLog } from './use-request-log.ts';
import { resolvers, type RequestContext } from '../resolvers/index.ts';
import { maskError, useClientErrorStatus, useStreamFieldErrors } from './errors.ts';
import { ANONYMOUS, createAuthenticator, useApiKeyAuth, wsAuthenticate, type AuthServerContext } from './auth.ts';
import { useArmor, useRequestParseErrors } from './armor.ts';
import { parseCache } from './parse-cache.ts';
import { useRateLimit, wsRateLimit } from './rate-limit.ts';
import { RateLimiter } from '../core/api/rate-limiter.ts';
import { ServingError } from '../core/errors.ts';
import { startControlPlane, type ControlPlane } from '../core/api/control-plane.ts';
import { Deadline, RELEASE_MS } from '../core/shutdown.ts';
import { graphiqlOptions, renderGraphiQL } from './graphiql.ts';
import { createOps } from './ops.ts';

const typeDefs = ['schema.graphql', 'ops.graphql'].map((f) => readFileSync(new URL(`../schema/${f}`, import.meta.url), 'utf8'));

export interface ApiServer {
  service: PredictionService;
  http: Server;
  /** Starts listening; resolves with the bound port. */
  listen(port?: number, host?: string): Promise<number>;
  /**
   * Stops accepting, answers what is in flight, closes subscribers, then disconnects, by
   * `http.drainMs` + RELEASE_MS whatever Redis does. False when requests were given up on.
   */
  close(): Promise<boolean>;
}

/** A GraphQL error as a WebSocket client gets it: the HTTP status and headers left out. */
function withoutHttp(error: GraphQLError): GraphQLFormattedError {
  const formatted = error.toJSON();
  if (!formatted.extensions?.http) return formatted;
  const { http: _http, ...extensions } = formatted.extensions;
  return { ...formatted, extensions };
}

export async function createApiServer(options: { config: BatchlineConfig; logger: Logger }): Promise<ApiServer> {
  const { config, logger } = options;
  // A malformed auth.keys stops the server here, before anything starts.
  const auth = createAuthenticator(config.auth);
  if (!auth.enabled && config.auth.keys.trim()) logger.warn('API keys are configured but auth.enabled is false: every request is let in');
  const repository = await scanConfigured(config, logger);
  logger.info({ models: repository.ready().map((v) => `${v.name}@${v.version}`) }, 'model repository scanned');

  const redis = createRedis(config.redis, 'producer');
  const keys = keysOf(redis, config.redis.prefix);
  const pubsub = new RedisPubSub({
    publisher: createRedis(config.redis, 'producer'),
    subscriber: createRedis(config.redis, 'subscriber'),
  });
  const metrics = createMetrics('api');
  const store = new ResultStore(redis, keys, config.results.ttlSeconds);
  const feed = new ResultFeed(resultChannels(pubsub), store, keys);
  const queues = new PredictionQueues(redis, config.redis.prefix, config.queue.maxDepth, config.queue.shards);
  const lostWork = new LostWork(queues, store);
  // On a cluster, watches also re-read their record every 5 s: subscriptions move with failovers and slots.
  feed.checkLostWork(lostWork, isCluster(redis) ? 5000 : 0);
  const registry = new WorkerRegistry(redis, config.redis.prefix);
  const service = new PredictionService({
    config,
    repository,
    queues,
    store,
    feed,
    workers: registry,
    redis,
    keys,
    metrics,
    logger,
    lostWork,
  });
  const ops = createOps({ config, redis, queues, service, metrics, authEnabled: auth.enabled });
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
  try {
    await Promise.race([
      Promise.all([whenReady(redis, 5000), replies]),
      new Promise((_, reject) => setTimeout(() => reject(new Error('Redis not ready after 5000 ms')), 5000).unref()),
    ]);
  } catch (e) {
    logger.warn({ err: (e as Error).message }, 'Redis unreachable at start; serving 503 until it is back');
    replies.catch(() => {});
  }

  // Control channel (rescans, cache housekeeping) and the periodic maintenance jobs.
  // Not awaited: with Redis down the subscription waits for it, and the API must serve 503s meanwhile.
  let control: ControlPlane | undefined;
  const controlStarting = startControlPlane({ config, logger, redis, pubsub, keys, service, registry }).then(
    (c) => void (control = c),
    (e: Error) => logger.warn({ err: e.message }, 'control plane not started'),
  );

  const metricsPlugin: Plugin = {
    async onRequest({ url, endResponse, fetchAPI }) {
      if (url.pathname !== '/metrics') return;
      await service.collectQueueDepth().catch(() => {});
      await service.collectDrift().catch(() => {});
      endResponse(new fetchAPI.Response(await metrics.registry.metrics(), { headers: { 'content-type': metrics.registry.contentType } }));
    },
  };
  const introspectionPlugin: Plugin = {
    onValidate({ addValidationRule }) {
      addValidationRule(NoSchemaIntrospectionCustomRule);
    },
  };

  const yoga = createYoga<{ req?: IncomingMessage } & AuthServerContext, RequestContext>({
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
        service,
        ops: ops.context,
        maintenance: control?.maintenance,
        requestId: requestScope.getStore()?.requestId ?? requestIdOf(request?.headers ?? req?.headers),
        principal: who,
      };
    },
    plugins: [
      metricsPlugin,
      ...ops.plugins,
      useClientErrorStatus(),
      useStreamFieldErrors(),
      useRequestLog(),
      useReadinessCheck({ endpoint: '/ready', check: () => service.ready() }),
      ...(config.http.introspection ? [] : [introspectionPlugin]),
      useApiKeyAuth(auth),
      useRateLimit(limiter),
      useArmor(config.limits),
      useRequestParseErrors(config.http.maxBodyBytes),
    ],
  });

  const http = createServer((req, res) => {
    // Every answer names its request, and every line logged while serving it does too.
    const scope = { requestId: requestIdOf(req.headers) };
    res.setHeader('x-request-id', scope.requestId);
    logWhenFinished(logger, config.log.requests, scope, req, res);
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > config.http.maxBodyBytes) {
      Object.assign(scope, { code: 'PAYLOAD_TOO_LARGE' });
      res.writeHead(413, { 'content-type': 'application/json', connection: 'close' });
      res.end(
        JSON.stringify({
          errors: [{ message: `request body over ${config.http.maxBodyBytes} bytes`, extensions: { code: 'PAYLOAD_TOO_LARGE' } }],
        }),
      );
      req.resume();
      return;
    }
    requestScope.run(scope, () => void yoga(req, res));
  });

  const wss = new WebSocketServer({ server: http, path: yoga.graphqlEndpoint, maxPayload: config.http.maxBodyBytes });
  const wsLog = wsRequestLog(logger, config.log.requests);
  const ws = useServer<Record<string, unknown> | undefined, AuthServerContext>(
    {
      onConnect: (ctx) => wsAuthenticate(auth, ctx),
      // `extensions.http` tells yoga which HTTP status to answer; a WebSocket has none to set.
      onNext: (ctx, id, _payload, _args, result) => {
        if (!result.errors) return undefined;
        wsLog.errors(ctx, id, result.errors);
        return { ...result, errors: result.errors.map(withoutHttp) };
      },
      onError: (ctx, id, _payload, errors) => {
        const formatted = errors.map(withoutHttp);
        wsLog.end(ctx, id, formatted[0]?.extensions?.code as string | undefined);
        return formatted;
      },
      onComplete: (ctx, id) => wsLog.end(ctx, id),
      execute: (args) => (args.rootValue as { execute: typeof import('graphql').execute }).execute(args),
      subscribe: (args) => (args.rootValue as { subscribe: typeof import('graphql').subscribe }).subscribe(args),
      onSubscribe: async (ctx, id, params) => {
        const refused = await wsRateLimit(limiter, ctx.extra.principal, ctx.extra.request);
        if (refused) return refused;
        const { principal } = ctx.extra;
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          ...ctx,
          req: ctx.extra.request,
          socket: ctx.extra.socket,
          params,
          principal,
        });
        let document;
        try {
          document = parse(params.query);
        } catch (e) {
          wsLog.begin(ctx, id, ctx.extra.request, undefined, params.operationName, params.variables);
          return [e as import('graphql').GraphQLError];
        }
        const scope = wsLog.begin(ctx, id, ctx.extra.request, document, params.operationName, params.variables);
        const errors = validate(schema, document);
        if (errors.length) return errors;
        return {
          schema,
          operationName: params.operationName,
          document,
          variableValues: params.variables,
          contextValue: await requestScope.run(scope, () => contextFactory({ req: ctx.extra.request, principal } as never)),
          rootValue: { execute, subscribe },
        };
      },
    },
    wss,
  );

  let closing: Promise<boolean> | undefined;
  return {
    service,
    http,
    listen(port = config.http.port, host = config.http.host) {
      return new Promise((resolve, reject) => {
        http.once('error', reject);
        http.listen(port, host, () => resolve((http.address() as AddressInfo).port));
      });
    },
    close() {
      closing ??= (async () => {
        const deadline = new Deadline(config.http.drainMs + RELEASE_MS);
        // Closes that only Redis can finish are not waited for once it is gone.
        const unreachable = (): boolean => redis.status !== 'ready';
        // 1. Stop accepting connections.
        const closed = new Promise<void>((resolve) => http.close(() => resolve()));
        http.closeIdleConnections();
        // 2. Open subscriptions (SSE and WebSocket) end now with SERVICE_UNAVAILABLE, so their
        //    clients resubscribe on another replica; synchronous requests in flight get up to
        //    `http.drainMs` to be answered.
        ops.endSubscriptions();
        const unanswered = await feed.close(config.http.drainMs);
        await ops.close().catch(() => {});
        // 3. WebSocket clients are closed (1001, going away); lingering HTTP connections cut.
        await deadline.step('WebSocket clients', Promise.resolve(ws.dispose()), 1000);
        wss.close();
        // Connections whose request was answered in the drain are idle now.
        http.closeIdleConnections();
        await deadline.within(closed, 1000);
        http.closeAllConnections();
        await deadline.within(controlStarting, 1000, unreachable);
        await deadline.step('maintenance worker', control?.close(), Infinity, unreachable);
        await deadline.step('drift counts', service.close(), Infinity, unreachable);
        await deadline.step('queue connections', queues.close(), Infinity, unreachable);
        await deadline.step('result subscriptions', pubsub.close(), Infinity, unreachable);
        const state = unreachable() ? 'unreachable' : 'ready';
        for (const r of [redis, pubsub.getPublisher() as RedisClient, pubsub.getSubscriber() as RedisClient]) r.disconnect();
        const { dropped } = deadline;
        if (unanswered > 0) {
          logger.warn(
            { requestsUnanswered: unanswered, redis: state, dropped, drainMs: config.http.drainMs },
            `API stopped, giving up on ${unanswered} request(s) in flight: answered 503 at the end of the drain (their jobs may still run)`,
          );
          return false;
        }
        if (dropped.length)
          logger.info({ redis: state, dropped }, `API stopped with no request in flight; gave up waiting on: ${dropped.join(', ')}`);
        else logger.info('API stopped');
        return true;
      })();
      return closing;
    },
  };
}
