/** A worker's small HTTP side: /health, /ready (models loaded) and /metrics, for probes and Prometheus. */
import { createServer, type Server } from 'node:http';
import { exposition } from '../core/telemetry/metrics.ts';
import type { PredictionWorker } from './prediction-worker.ts';

export function startWorkerHttp(worker: PredictionWorker, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/health') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"message":"alive"}');
    } else if (path === '/ready') {
      const ready = worker.loaded.length > 0;
      res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ ready, models: worker.loaded }));
    } else if (path === '/metrics') {
      worker.metrics.redisUp.set(worker.redisReady() ? 1 : 0);
      void exposition(worker.metrics, req.headers.accept).then(({ contentType, body }) =>
        res.writeHead(200, { 'content-type': contentType }).end(body),
      );
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(port, () => resolve(server)));
}
