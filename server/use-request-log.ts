/**
 * One line per request at `info` (`log.requests`: all, errors or off): operation, model,
 * HTTP status, error code, milliseconds and request id; and `x-request-id` on every answer
 * (the client's own id when it sent a well-formed one, else a fresh one).
 *
 * The HTTP adapter opens a `requestScope` per request (core/telemetry/logger.ts), so every line logged
 * while serving it carries its request id, errors included; this plugin fills in what the
 * line needs as yoga learns it: the operation and model when it executes, the code when the
 * answer is formed.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Kind, type DocumentNode, type OperationDefinitionNode, type ValueNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { BatchlineConfig } from '../core/config/settings.ts';
import { requestScope, type Logger, type RequestScope } from '../core/telemetry/logger.ts';

type Mode = BatchlineConfig['log']['requests'];

/** The client's `x-request-id` if it is a sane token, else a new one. */
export function requestIdOf(headers: Headers | IncomingMessage['headers'] | undefined): string {
  // yoga's Request may carry a Headers ponyfill, not the global class: test for the method.
  const raw =
    typeof (headers as Headers | undefined)?.get === 'function'
      ? (headers as Headers).get('x-request-id')
      : (headers as IncomingMessage['headers'] | undefined)?.['x-request-id'];
  const id = Array.isArray(raw) ? raw[0] : raw;
  return id && /^[\w.:-]{1,128}$/.test(id) ? id : randomUUID();
}

function argumentValue(node: ValueNode | undefined, variables: Record<string, unknown> | undefined | null): string | undefined {
  if (!node) return undefined;
  if (node.kind === Kind.STRING) return node.value;
  if (node.kind === Kind.VARIABLE) {
    const v = variables?.[node.name.value];
    return typeof v === 'string' ? v : undefined;
  }
  return undefined;
}

/** `query predict` and the `model` argument of the operation's first root field. */
export function describeOperation(
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Record<string, unknown> | undefined | null,
): { operation: string; model?: string } | undefined {
  const op = document.definitions.find(
    (d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION && (!operationName || d.name?.value === operationName),
  );
  if (!op) return undefined;
  const first = op.selectionSet.selections.find((s) => s.kind === Kind.FIELD);
  if (!first || first.kind !== Kind.FIELD) return { operation: op.operation };
  const model = argumentValue(first.arguments?.find((a) => a.name.value === 'model')?.value, variables);
  return { operation: `${op.operation} ${first.name.value}`, model };
}

/** Logs the finished request once `res` is written, if `mode` asks for it. */
export function logWhenFinished(logger: Logger, mode: Mode, scope: RequestScope, req: IncomingMessage, res: ServerResponse): void {
  if (mode === 'off') return;
  const started = performance.now();
  res.once('finish', () => {
    if (mode === 'errors' && res.statusCode < 400) return;
    logger.info(
      {
        requestId: scope.requestId,
        method: req.method,
        path: req.url?.split('?')[0],
        operation: scope.operation,
        model: scope.model,
        status: res.statusCode,
        code: scope.code,
        ms: Math.round((performance.now() - started) * 100) / 100,
      },
      'request',
    );
  });
}

export function useRequestLog(): Plugin {
  return {
    onExecute({ args }) {
      const scope = requestScope.getStore();
      if (scope) Object.assign(scope, describeOperation(args.document, args.operationName, args.variableValues));
    },
    onSubscribe({ args }) {
      const scope = requestScope.getStore();
      if (scope) Object.assign(scope, describeOperation(args.document, args.operationName, args.variableValues));
    },
    onResultProcess({ result }) {
      const scope = requestScope.getStore();
      if (!scope || Array.isArray(result) || !('errors' in result)) return;
      const code = result.errors?.[0]?.extensions?.code;
      if (typeof code === 'string') scope.code = code;
    },
  };
}

/**
 * The same line for each WebSocket operation (graphql-ws hooks): a socket carries many
 * operations, so each is its own "request", timed from its subscribe message to its end.
 */
export function wsRequestLog(logger: Logger, mode: Mode) {
  const open = new WeakMap<object, Map<string, RequestScope & { started: number }>>();
  const ops = (ctx: object) => open.get(ctx) ?? open.set(ctx, new Map()).get(ctx)!;
  const end = (ctx: object, id: string, code?: string): void => {
    const op = ops(ctx).get(id);
    if (!op) return;
    ops(ctx).delete(id);
    op.code ??= code;
    if (mode === 'off' || (mode === 'errors' && !op.code)) return;
    logger.info(
      {
        requestId: op.requestId,
        transport: 'websocket',
        operation: op.operation,
        model: op.model,
        code: op.code,
        ms: Math.round((performance.now() - op.started) * 100) / 100,
      },
      'request',
    );
  };
  return {
    /** At subscribe: the operation and its request id (from the upgrade request, or a fresh one). */
    begin(
      ctx: object,
      id: string,
      request: IncomingMessage,
      query: DocumentNode | undefined,
      operationName: string | null | undefined,
      variables: Record<string, unknown> | null | undefined,
    ): RequestScope {
      const scope = {
        requestId: requestIdOf(request.headers),
        started: performance.now(),
        ...(query ? describeOperation(query, operationName, variables) : {}),
      };
      // Kept until the operation ends only for its log line: with request logs off, nothing is held per operation.
      if (mode !== 'off') ops(ctx).set(id, scope);
      return scope;
    },
    /** An error message ends the operation; errors in a result are noted for its end. */
    errors(ctx: object, id: string, errors: readonly { extensions?: Record<string, unknown> }[] | undefined): void {
      const code = errors?.[0]?.extensions?.code;
      const op = ops(ctx).get(id);
      if (op && typeof code === 'string') op.code ??= code;
    },
    end,
  };
}
