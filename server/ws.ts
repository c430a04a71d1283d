/**
 * The graphql-ws adapter (`graphql-transport-ws`) on the HTTP server's GraphQL path: the
 * connection authenticates once (server/auth.ts), every operation is rate limited, logged and
 * run through the same yoga envelope as HTTP, and errors go out without `extensions.http`.
 * With tracing on, every operation is a server span continuing the caller's W3C context: the
 * operation's `extensions.traceparent` (and `tracestate`), else `connection_init`'s payload
 * (`traceparent`, or `headers.traceparent`), else the upgrade request's headers; its results
 * carry the span's `traceparent` in their `extensions`.
 */
import type { IncomingMessage, Server } from 'node:http';
import {
  Kind,
  getOperationAST,
  type DocumentNode,
  type ExecutionResult,
  type GraphQLError,
  type GraphQLFormattedError,
  type OperationDefinitionNode,
} from 'graphql';
import { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/use/ws';
import { requestScope } from '../core/telemetry/logger.ts';
import { requestIdOf, wsRequestLog } from './use-request-log.ts';
import { wsAuthenticate, type AuthServerContext } from './auth.ts';
import { wsRateLimit } from './rate-limit.ts';
import type { App } from './app.ts';
import type { ConnectionCap } from './connection-cap.ts';
import { holdFinalComplete, ReadReceipts } from './ws-final-complete.ts';
import { contextWith, endSpan, startServerSpan, traceparentOf, withContext, type Context, type Span } from '../core/telemetry/trace.ts';

/** A traced operation: its span, and the context its execution runs in. */
interface TracedOperation {
  span: Span;
  context: Context;
}

/** Where a WebSocket operation's caller put its trace context, most specific first. */
function traceHeader(
  name: 'traceparent' | 'tracestate',
  extensions: Record<string, unknown> | undefined | null,
  connectionParams: Readonly<Record<string, unknown>> | undefined,
  headers: Record<string, string | string[] | undefined>,
): string | undefined {
  const str = (v: unknown): string | undefined =>
    typeof v === 'string' ? v : Array.isArray(v) && typeof v[0] === 'string' ? v[0] : undefined;
  const paramHeaders = connectionParams?.headers as Record<string, unknown> | undefined;
  return str(extensions?.[name]) ?? str(connectionParams?.[name]) ?? str(paramHeaders?.[name]) ?? str(headers[name]);
}

/** `subscription predictionResult`: the operation's type and its name, or its first field's. */
function operationTitle(document: DocumentNode, operationName: string | null | undefined): { type: string; title: string } {
  const op = document.definitions.find(
    (d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION && (!operationName || d.name?.value === operationName),
  );
  const first = op?.selectionSet.selections.find((s) => s.kind === Kind.FIELD);
  const name = op?.name?.value ?? (first?.kind === Kind.FIELD ? first.name.value : undefined);
  const type = op?.operation ?? 'query';
  return { type, title: name ? `${type} ${name}` : type };
}

/** A GraphQL error as a WebSocket client gets it: the HTTP status and headers left out. */
function withoutHttp(error: GraphQLError): GraphQLFormattedError {
  const formatted = error.toJSON();
  if (!formatted.extensions?.http) return formatted;
  const { http: _http, ...extensions } = formatted.extensions;
  return { ...formatted, extensions };
}

/** The close code ws sends for a frame error (1002 protocol error, 1009 too big), kept on the error under a symbol. */
function wsStatusOf(err: Error): number | undefined {
  const key = Object.getOwnPropertySymbols(err).find((k) => k.description === 'status-code');
  const v = key ? (err as unknown as Record<symbol, unknown>)[key] : undefined;
  return typeof v === 'number' ? v : undefined;
}

/**
 * What a connection's operations read of its upgrade request: its headers (API key, request
 * id, trace context, route key), its method and path, and the client's address (rate limits).
 */
function upgradeRequestOf(req: IncomingMessage): IncomingMessage {
  const slim = { headers: req.headers, method: req.method, url: req.url, socket: { remoteAddress: req.socket?.remoteAddress } };
  return slim as unknown as IncomingMessage;
}

export interface WebSocketAdapter {
  /** Closes every client (1001, going away) and waits for their operations to end. */
  dispose(): Promise<void>;
  /** Stops the WebSocket server itself. */
  close(): void;
}

export function attachWebSocket(http: Server, app: App, cap?: ConnectionCap): WebSocketAdapter {
  const { config, logger, yoga, auth, limiter } = app;
  const wss = new WebSocketServer({
    server: http,
    path: yoga.graphqlEndpoint,
    maxPayload: config.http.maxBodyBytes,
    // Over `http.maxConnections`: the upgrade is answered 503 with Retry-After (server/connection-cap.ts).
    verifyClient: (info, done) =>
      cap?.refuseUpgrade(info.req) ? done(false, 503, 'Service Unavailable', { 'retry-after': '1', connection: 'close' }) : done(true),
  });
  const wsLog = wsRequestLog(logger, config.log.requests);
  // Traced operations by connection and id, and the context each execution runs in.
  const operations = new WeakMap<object, Map<string, TracedOperation>>();
  const executionContext = new WeakMap<object, Context>();
  const endOperation = (ctx: object, id: string, code?: string): void => {
    const op = operations.get(ctx)?.get(id);
    if (!op) return;
    operations.get(ctx)!.delete(id);
    endSpan(op.span, code ? { code, message: code } : undefined);
  };
  // Per connection (graphql-ws's context object): the pings that tell when a subscription may complete.
  const receipts = new WeakMap<object, ReadReceipts>();
  const graceMs = config.http.wsCompleteGraceMs;
  const ws = useServer<Record<string, unknown> | undefined, AuthServerContext>(
    {
      onConnect: (ctx) => {
        // Held for the connection's life: only what its operations read (headers, the
        // client's address), not node's whole upgrade request (its raw headers, stream state).
        (ctx.extra as { request: IncomingMessage }).request = upgradeRequestOf(ctx.extra.request);
        return wsAuthenticate(auth, ctx);
      },
      // `extensions.http` tells yoga which HTTP status to answer; a WebSocket has none to set.
      onNext: (ctx, id, _payload, _args, result) => {
        const traced = operations.get(ctx)?.get(id);
        const extensions = traced ? { ...result.extensions, traceparent: traceparentOf(traced.span) } : result.extensions;
        if (!result.errors) return traced ? { ...result, extensions } : undefined;
        wsLog.errors(ctx, id, result.errors);
        return { ...result, errors: result.errors.map(withoutHttp), ...(extensions ? { extensions } : {}) };
      },
      onError: (ctx, id, _payload, errors) => {
        const formatted = errors.map(withoutHttp);
        const code = formatted[0]?.extensions?.code as string | undefined;
        wsLog.end(ctx, id, code);
        endOperation(ctx, id, code ?? 'INTERNAL_SERVER_ERROR');
        return formatted;
      },
      onComplete: (ctx, id) => {
        wsLog.end(ctx, id);
        endOperation(ctx, id);
      },
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
      onClose: (ctx) => {
        receipts.get(ctx)?.close();
        for (const id of [...(operations.get(ctx)?.keys() ?? [])]) endOperation(ctx, id);
      },
      execute: (args) =>
        withContext(executionContext.get(args.contextValue as object), () =>
          (args.rootValue as { execute: typeof import('graphql').execute }).execute(args),
        ),
      subscribe: (args) =>
        withContext(executionContext.get(args.contextValue as object), () =>
          (args.rootValue as { subscribe: typeof import('graphql').subscribe }).subscribe(args),
        ),
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
        const { type, title } = operationTitle(document, params.operationName);
        const traced = startServerSpan(
          title,
          (name) => traceHeader(name, params.extensions, ctx.connectionParams, ctx.extra.request.headers),
          { 'graphql.operation.type': type, ...(params.operationName ? { 'graphql.operation.name': params.operationName } : {}) },
        );
        const contextValue = await requestScope.run(scope, () => contextFactory({ req: ctx.extra.request, principal } as never));
        if (traced) {
          const context = contextWith(traced.span, traced.parent)!;
          if (!operations.has(ctx)) operations.set(ctx, new Map());
          operations.get(ctx)!.set(id, { span: traced.span, context });
          executionContext.set(contextValue as object, context);
        }
        return {
          schema,
          operationName: params.operationName,
          document,
          variableValues: params.variables,
          contextValue,
          rootValue: { execute, subscribe },
        };
      },
    },
    wss,
  );
  // graphql-ws prints every socket error with its stack to stderr ("Internal error emitted on
  // a WebSocket socket"); they are the client's malformed frames (no mask, reserved bits,
  // absurd lengths, over `http.maxBodyBytes`), which ws answers itself by closing with 1002 or
  // 1009. Registered after graphql-ws's, this listener puts one structured line in their place.
  wss.on('connection', (socket, request) => {
    socket.removeAllListeners('error');
    const { remoteAddress } = request.socket;
    const requestId = requestIdOf(request.headers);
    socket.on('error', (err: Error & { code?: string }) => {
      logger.warn(
        { code: err.code ?? 'WS_ERROR', closeCode: wsStatusOf(err), remoteAddress, requestId },
        `WebSocket closed: ${err.message}`,
      );
      // ws has closed it already for a frame error; anything else ends here too.
      if (socket.readyState === socket.OPEN) socket.close(1011, 'Internal server error');
    });
  });
  return {
    dispose: async () => void (await ws.dispose()),
    close: () => wss.close(),
  };
}
