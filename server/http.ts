/**
 * The node:http adapter: every answer names its request (`x-request-id`), every line logged
 * while serving it does too, and a body declared over `http.maxBodyBytes` is refused before
 * yoga reads it. The rest is yoga's.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { requestScope } from '../core/telemetry/logger.ts';
import { ServingError } from '../core/errors/registry.ts';
import { logWhenFinished, requestIdOf } from './use-request-log.ts';
import { errorResponseBody } from './errors.ts';
import type { App } from './app.ts';

export function httpHandler(app: App): (req: IncomingMessage, res: ServerResponse) => void {
  const { config, logger, yoga } = app;
  return (req, res) => {
    const scope = { requestId: requestIdOf(req.headers) };
    res.setHeader('x-request-id', scope.requestId);
    logWhenFinished(logger, config.log.requests, scope, req, res);
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > config.http.maxBodyBytes) {
      const err = new ServingError('PAYLOAD_TOO_LARGE', `request body over ${config.http.maxBodyBytes} bytes`);
      Object.assign(scope, { code: err.code });
      // The body is not read: the connection cannot carry another request after it.
      res.writeHead(err.status, { 'content-type': 'application/json', connection: 'close' });
      res.end(errorResponseBody(err));
      req.resume();
      return;
    }
    requestScope.run(scope, () => void yoga(req, res));
  };
}
