/**
 * The node:http adapter: every answer names its request (`x-request-id`), every line logged
 * while serving it does too, and a body declared over `http.maxBodyBytes` is refused before
 * yoga reads it, and a connection over `http.maxConnections` is answered 503 (server/connection-cap.ts). With tracing on, a GraphQL request (HTTP or SSE) is a server span continuing
 * the caller's `traceparent` / `tracestate`, and the answer carries its own `traceparent`.
 * Paths under /v2 are the Open Inference Protocol's (server/oip/rest.ts); the rest is yoga's.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { requestScope } from '../core/telemetry/logger.ts';
import { ServingError } from '../core/errors/registry.ts';
import { logWhenFinished, requestIdOf } from './use-request-log.ts';
import { errorResponseBody } from './errors.ts';
import type { App } from './app.ts';
import { serveOip } from './oip/rest.ts';
import { contextWith, endSpan, startServerSpan, traceparentOf, withContext } from '../core/telemetry/trace.ts';
import type { RequestScope } from '../core/telemetry/logger.ts';
import type { ConnectionCap } from './connection-cap.ts';

/** `POST /graphql` as a server span (undefined when tracing is off), ended with the response. */
function traceRequest(req: IncomingMessage, res: ServerResponse, path: string, scope: RequestScope) {
  const header = (name: string): string | undefined => {
    const v = req.headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const traced = startServerSpan(`${req.method} ${path}`, header, {
    'http.request.method': req.method ?? 'GET',
    'url.path': path,
    'http.route': path,
    'batchline.request_id': scope.requestId,
  });
  if (!traced) return undefined;
  res.setHeader('traceparent', traceparentOf(traced.span)!);
  // 'close' comes after 'finish', and also when the client goes away first (an SSE stream it left).
  res.once('close', () => {
    const { span } = traced;
    span.setAttribute('http.response.status_code', res.statusCode);
    if (scope.operation) span.setAttribute('graphql.operation.type', scope.operation.split(' ')[0]);
    if (scope.model) span.setAttribute('batchline.model', scope.model);
    // A server span fails on 5xx only: a 4xx is the client's.
    endSpan(span, res.statusCode >= 500 ? { code: scope.code ?? String(res.statusCode), message: `HTTP ${res.statusCode}` } : undefined);
  });
  return contextWith(traced.span, traced.parent);
}

export function httpHandler(app: App, cap?: ConnectionCap): (req: IncomingMessage, res: ServerResponse) => void {
  const { config, logger, yoga } = app;
  return (req, res) => {
    const scope = { requestId: requestIdOf(req.headers) };
    res.setHeader('x-request-id', scope.requestId);
    logWhenFinished(logger, config.log.requests, scope, req, res);
    const path = req.url?.split('?')[0] ?? '/';
    // A connection over `http.maxConnections`: 503, except /health, /ready and /metrics.
    if (cap?.refuseRequest(req, res, path)) {
      Object.assign(scope, { code: 'SERVICE_UNAVAILABLE' });
      return;
    }
    const oip = path === '/v2' || path.startsWith('/v2/');
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > config.http.maxBodyBytes) {
      const err = new ServingError('PAYLOAD_TOO_LARGE', `request body over ${config.http.maxBodyBytes} bytes`);
      Object.assign(scope, { code: err.code });
      // The body is not read: the connection cannot carry another request after it.
      res.writeHead(err.status, { 'content-type': 'application/json', connection: 'close' });
      // The inference protocol's errors are `{"error": "..."}`; GraphQL's, yoga's shape.
      res.end(oip ? JSON.stringify({ error: err.message }) : errorResponseBody(err));
      req.resume();
      return;
    }
    // The Open Inference Protocol's REST door (server/oip/rest.ts): the same core, no yoga.
    if (oip) {
      const traced = req.method === 'POST' ? traceRequest(req, res, path, scope) : undefined;
      requestScope.run(scope, () => withContext(traced, () => void serveOip(app, req, res, path, scope)));
      return;
    }
    const traced = path === yoga.graphqlEndpoint ? traceRequest(req, res, path, scope) : undefined;
    requestScope.run(scope, () => withContext(traced, () => void yoga(req, res)));
  };
}
