/**
 * The connection cap (`http.maxConnections`, server/connection-cap.ts), with a cap of 3: two
 * WebSocket clients and one keep-alive HTTP connection fill it; the next connection's GraphQL
 * request is answered 503 SERVICE_UNAVAILABLE with Retry-After and its WebSocket upgrade 503,
 * while /health, /ready and /metrics answer on new connections, the connections held go on
 * serving (a subscription on one gets its result), and refusals count in
 * batchline_rejections_total. Once a held connection closes, a new one is served again.
 */
import { request, Agent } from 'node:http';
import { describe, expect, inject, it } from 'vitest';
import WebSocket from 'ws';
import { createClient, type Client } from 'graphql-ws';
import { connectionCap, openFileLimit, PROBE_RESERVE } from '../../server/connection-cap.ts';
import { uniquePrefix } from '../../harness/stack.ts';
import { wsCollect } from '../support/clients.ts';
import { useStack } from '../support/use-stack.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('conncap');
const CAP = 3;
const stack = useStack({
  redisUrl,
  prefix,
  env: { BATCHLINE_MAX_CONNECTIONS: String(CAP), BATCHLINE_MAINTENANCE: 'false', BATCHLINE_LOG_REQUESTS: 'off' },
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request on `agent`'s connection (keep-alive), or on a connection of its own. */
function send(path: string, body?: string, agent: Agent | false = false): Promise<Answer> {
  const { port } = new URL(stack.api.url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: body === undefined ? 'GET' : 'POST',
        agent,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** A graphql-ws client that keeps its connection open (not lazy), connected. */
async function heldClient(): Promise<Client> {
  const client = createClient({ url: stack.api.ws, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false });
  await new Promise<void>((resolve, reject) => {
    client.on('connected', () => resolve());
    client.on('closed', (e) => reject(new Error(`closed: ${JSON.stringify(e)}`)));
  });
  return client;
}

const MODELS = JSON.stringify({ query: '{ models { name } }' });

/** A raw WebSocket upgrade: 'open', or the status of the answer that refused it. */
function upgrade(): Promise<{ opened: true; socket: WebSocket } | { opened: false; status: number; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(stack.api.ws, 'graphql-transport-ws');
    socket.once('open', () => resolve({ opened: true, socket }));
    socket.once('unexpected-response', (_req, res) => {
      resolve({ opened: false, status: res.statusCode!, retryAfter: res.headers['retry-after'] as string | undefined });
      res.resume();
      socket.terminate();
    });
    socket.once('error', (e) => reject(e));
  });
}

describe('http.maxConnections', () => {
  it('derives the default from the open-file limit, leaving room for the probes', () => {
    expect(connectionCap(0, 1024)).toBe(1024 - 256 - PROBE_RESERVE);
    expect(connectionCap(0, 65_536)).toBe(65_536 - 6553 - PROBE_RESERVE);
    expect(connectionCap(50, 1024)).toBe(50);
    // This process's own limit is read (Linux), and the cap stays under it.
    const limit = openFileLimit();
    expect(limit).toBeGreaterThan(0);
    expect(connectionCap(0)).toBeLessThan(limit!);
  });

  it('past the cap refuses new connections with 503 and Retry-After, keeps the probes and the held connections', async () => {
    const connections = stack.api.api.connections;
    expect(connections.cap).toBe(CAP);
    // Fill the cap: two graphql-ws clients (one connection each) and one keep-alive HTTP connection.
    const [a, b] = await Promise.all([heldClient(), heldClient()]);
    const held = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      expect((await send('/graphql', MODELS, held)).status).toBe(200);
      await until(
        () => connections.open() === CAP,
        () => `${CAP} connections open, not ${connections.open()}`,
      );

      // A new connection: its GraphQL request is refused, with the registry's code and Retry-After.
      const refused = await send('/graphql', MODELS);
      expect(refused.status).toBe(503);
      expect(refused.headers['retry-after']).toBe('1');
      expect(refused.headers.connection).toBe('close');
      expect((JSON.parse(refused.body) as { errors: { extensions: { code: string } }[] }).errors[0].extensions.code).toBe(
        'SERVICE_UNAVAILABLE',
      );
      // ... and so is an SSE subscription and a WebSocket upgrade on a new connection.
      expect((await send('/graphql?query=subscription%7BserverStats%7BuptimeSeconds%7D%7D')).status).toBe(503);
      const ws = await upgrade();
      expect(ws).toEqual({ opened: false, status: 503, retryAfter: '1' });

      // The probes answer on new connections whatever the count.
      expect((await send('/health')).status).toBe(200);
      expect((await send('/ready')).status).toBe(200);
      const metrics = await send('/metrics');
      expect(metrics.status).toBe(200);
      const counted = /batchline_rejections_total\{code="SERVICE_UNAVAILABLE"[^}]*\} (\d+)/.exec(metrics.body);
      expect(Number(counted?.[1])).toBe(3);

      // The connections held go on: a query on the keep-alive one, a prediction and its subscription on a WebSocket.
      expect((await send('/graphql', MODELS, held)).status).toBe(200);
      const id = await new Promise<string>((resolve, reject) => {
        a.subscribe(
          {
            query: 'mutation($i: PredictionInput!) { submitPrediction(model: "spam-mlp", input: $i) { id } }',
            variables: { i: { features: Array.from({ length: 64 }, (_, i) => (i % 5) / 5) } },
          },
          {
            next: (v) => resolve((v.data as { submitPrediction: { id: string } }).submitPrediction.id),
            error: reject,
            complete: () => {},
          },
        );
      });
      const events = await wsCollect(a, 'subscription($id: ID!) { predictionResult(id: $id) { id status } }', { id });
      expect(events.map((e) => (e.data as { predictionResult: { status: string } }).predictionResult.status)).toEqual(['COMPLETED']);

      // One held connection closes: a new connection is served again.
      await b.dispose();
      await until(() => connections.open() < CAP, 'a held connection to close');
      expect((await send('/graphql', MODELS)).status).toBe(200);
    } finally {
      held.destroy();
      await Promise.all([a.dispose(), b.dispose()]);
    }
  });
});
