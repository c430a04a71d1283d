/**
 * The API process: the composed app (server/app.ts) served over node:http — GraphQL over HTTP
 * and SSE (yoga) and over WebSocket (graphql-ws) on the same path, the inference protocol's
 * REST door under /v2, plus /health, /ready and /metrics — and over gRPC (the inference
 * protocol's other door, when `grpc.port` is set); and its shutdown, in order.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BatchlineConfig } from '../core/config/settings.ts';
import type { Logger } from '../core/telemetry/logger.ts';
import { Deadline, RELEASE_MS } from '../core/lifecycle/shutdown.ts';
import { createApp, type App } from './app.ts';
import { httpHandler } from './http.ts';
import { attachWebSocket } from './ws.ts';
import { capConnections, connectionCap, type ConnectionCap } from './connection-cap.ts';
import { releaseMemoryWhenIdle } from './idle-memory.ts';
import { startGrpc, type GrpcDoor } from './oip/grpc.ts';

export interface ApiServer {
  app: App;
  http: Server;
  /** The connection cap (`http.maxConnections`, resolved) and the connections open now. */
  connections: ConnectionCap;
  /** Starts listening; resolves with the bound port. */
  listen(port?: number, host?: string): Promise<number>;
  /**
   * Serves the inference protocol over gRPC (server/oip/grpc.ts) on `port` (0: a free one; the
   * CLI passes `grpc.port` unless it is 0, which turns gRPC off); resolves with the bound port.
   */
  listenGrpc(port: number, host?: string): Promise<number>;
  /**
   * Stops accepting, answers what is in flight, closes subscribers, then disconnects, by
   * `http.drainMs` + RELEASE_MS whatever Redis does. False when requests were given up on.
   */
  close(): Promise<boolean>;
}

export async function createApiServer(options: { config: BatchlineConfig; logger: Logger }): Promise<ApiServer> {
  const { config, logger } = options;
  const app = await createApp(options);
  const http = createServer();
  const connections = capConnections(http, {
    cap: connectionCap(config.http.maxConnections),
    logger,
    rejected: (code) => app.countRejection(code),
  });
  http.on('request', httpHandler(app, connections));
  const ws = attachWebSocket(http, app, connections);
  // Memory a burst took is given back once the process is idle again (server/idle-memory.ts).
  const idleMemory = releaseMemoryWhenIdle(logger);

  let grpcDoor: GrpcDoor | undefined;
  let closing: Promise<boolean> | undefined;
  return {
    app,
    http,
    connections,
    listen(port = config.http.port, host = config.http.host) {
      return new Promise((resolve, reject) => {
        http.once('error', reject);
        http.listen(port, host, () => resolve((http.address() as AddressInfo).port));
      });
    },
    async listenGrpc(port, host = config.http.host) {
      grpcDoor = await startGrpc(app, port, host);
      return grpcDoor.port;
    },
    close() {
      closing ??= (async () => {
        const deadline = new Deadline(config.http.drainMs + RELEASE_MS);
        idleMemory.stop();
        // 1. Stop accepting connections.
        const closed = new Promise<void>((resolve) => http.close(() => resolve()));
        http.closeIdleConnections();
        // gRPC takes no new calls; the calls in flight drain with the HTTP requests.
        const grpcClosed = grpcDoor?.shutdown();
        // 2. Open subscriptions (SSE and WebSocket) end now with SERVICE_UNAVAILABLE, so their
        //    clients resubscribe on another replica; synchronous requests in flight get up to
        //    `http.drainMs` to be answered.
        const unanswered = await app.drain(config.http.drainMs);
        // 3. WebSocket clients are closed (1001, going away); lingering HTTP connections cut.
        await deadline.step('WebSocket clients', ws.dispose(), 1000);
        ws.close();
        // Connections whose request was answered in the drain are idle now.
        http.closeIdleConnections();
        await deadline.within(closed, 1000);
        http.closeAllConnections();
        if (grpcClosed) {
          await deadline.step('gRPC calls', grpcClosed, 1000);
          grpcDoor!.force();
        }
        // 4. What only Redis can finish, then the connections.
        const state = await app.release(deadline);
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
