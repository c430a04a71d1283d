/**
 * The graphql-ws adapter (`graphql-transport-ws`) on the HTTP server's GraphQL path: the
 * connection authenticates once (server/auth.ts), every operation is rate limited, logged and
 * run through the same yoga envelope as HTTP, and errors go out without `extensions.http`.
 */
import type { Server } from 'node:http';
import { getOperationAST, type ExecutionResult, type GraphQLError, type GraphQLFormattedError } from 'graphql';
import { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/use/ws';
import { requestScope } from '../core/telemetry/logger.ts';
import { wsRequestLog } from './use-request-log.ts';
import { wsAuthenticate, type AuthServerContext } from './auth.ts';
import { wsRateLimit } from './rate-limit.ts';
import type { App } from './app.ts';
import { holdFinalComplete, ReadReceipts } from './ws-final-complete.ts';

/** A GraphQL error as a WebSocket client gets it: the HTTP status and headers left out. */
function withoutHttp(error: GraphQLError): GraphQLFormattedError {
  const formatted = error.toJSON();
  if (!formatted.extensions?.http) return formatted;
  const { http: _http, ...extensions } = formatted.extensions;
  return { ...formatted, extensions };
}

export interface WebSocketAdapter {
  /** Closes every client (1001, going away) and waits for their operations to end. */
  dispose(): Promise<void>;
  /** Stops the WebSocket server itself. */
  close(): void;
}

export function attachWebSocket(http: Server, app: App): WebSocketAdapter {
  const { config, logger, yoga, auth, limiter } = app;
  const wss = new WebSocketServer({ server: http, path: yoga.graphqlEndpoint, maxPayload: config.http.maxBodyBytes });
  const wsLog = wsRequestLog(logger, config.log.requests);
  // Per connection (graphql-ws's context object): the pings that tell when a subscription may complete.
  const receipts = new WeakMap<object, ReadReceipts>();
  const graceMs = config.http.wsCompleteGraceMs;
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
      // A subscription's `complete` waits until the client has read its last result (server/ws-final-complete.ts).
      onOperation:
        graceMs > 0
          ? (ctx, _id, _payload, args, result) => {
              if (getOperationAST(args.document, args.operationName)?.operation !== 'subscription') return undefined;
              let r = receipts.get(ctx);
              if (!r) receipts.set(ctx, (r = new ReadReceipts(ctx.extra.socket, graceMs)));
              return holdFinalComplete(result as AsyncIterable<ExecutionResult> | ExecutionResult, r);
            }
          : undefined,
      onPong: (ctx, payload) => receipts.get(ctx)?.pong(payload),
      onClose: (ctx) => receipts.get(ctx)?.close(),
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
          return [e as GraphQLError];
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
  return {
    dispose: async () => void (await ws.dispose()),
    close: () => wss.close(),
  };
}
