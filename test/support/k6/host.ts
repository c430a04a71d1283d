/**
 * The host side of the k6 stand-in: starts a VU thread (vu.ts) for a script and does its
 * HTTP (fetch) and WebSocket (ws) I/O for real, answering on a MessagePort and waking the
 * blocked VU through a shared counter. Each call evaluates the script afresh with its own
 * `__ENV`, as each k6 run would.
 */
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import WebSocket from 'ws';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { MetricDefinition, Sample, SocketEvent } from './runtime.ts';
import type { VuData, VuTask } from './vu.ts';

const VU_ENTRY = new URL('./vu.ts', import.meta.url);

/** `options` as scripts export them (the parts tests read). */
export interface K6Options {
  scenarios?: Record<
    string,
    Record<string, unknown> & { executor: string; startTime?: string; duration?: string; stages?: { duration: string; target: number }[] }
  >;
  thresholds?: Record<string, string[]>;
  summaryTrendStats?: string[];
  [key: string]: unknown;
}

export interface Loaded {
  options: K6Options;
  /** The custom metrics the script's init context created. */
  definitions: Record<string, MetricDefinition>;
}

export interface Run {
  samples: Sample[];
  definitions: Record<string, MetricDefinition>;
  /** The reason given to exec.test.abort(), when the script aborted the run. */
  aborted?: string;
  /** Exceptions that ended iterations. */
  errors: string[];
  /** WebSocket connections the VU opened and HTTP requests it made: what a tight loop would show. */
  connections: number;
  requests: number;
}

type VuRequest =
  | {
      op: 'http';
      id: number;
      method: string;
      url: string;
      body?: string | ArrayBuffer;
      headers: Record<string, string>;
      timeoutMs: number;
      binary?: boolean;
    }
  | { op: 'grpc-connect'; id: number; address: string; protoFiles: string[] }
  | {
      op: 'grpc-invoke';
      id: number;
      connection: number;
      method: string;
      request: unknown;
      metadata: Record<string, string>;
      timeoutMs: number;
    }
  | { op: 'grpc-close'; connection: number }
  | { op: 'ws-connect'; id: number; url: string; headers: Record<string, string> }
  | { op: 'ws-send'; socket: number; data: string }
  | { op: 'ws-ping'; socket: number }
  | { op: 'ws-close'; socket: number; code: number };

interface GrpcConnection {
  client: grpc.Client;
  definition: protoLoader.PackageDefinition;
}

/** A gRPC connection for k6's `client.connect`, with the .proto files the script loaded. */
function grpcConnect(address: string, protoFiles: string[]): GrpcConnection {
  const definition = protoLoader.loadSync(protoFiles, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
  return { client: new grpc.Client(address, grpc.credentials.createInsecure()), definition };
}

/** What k6 gives a script for a message: protojson's names (lowerCamelCase) and bytes as base64. */
function protojson(v: unknown): unknown {
  if (Buffer.isBuffer(v)) return v.toString('base64');
  if (Array.isArray(v)) return v.map(protojson);
  if (v && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()), protojson(x)]));
  return v;
}

/** k6's `client.invoke` of a unary method (`package.Service/Method`), its status and message. */
function grpcInvoke(
  c: GrpcConnection,
  method: string,
  request: unknown,
  metadata: Record<string, string>,
  timeoutMs: number,
): Promise<{ status: number; message: unknown; error: string }> {
  const slash = method.lastIndexOf('/');
  const service = c.definition[method.slice(0, slash)] as Record<string, grpc.MethodDefinition<unknown, unknown>> | undefined;
  const def = service?.[method.slice(slash + 1)];
  if (!def) return Promise.resolve({ status: 12, message: null, error: `method ${method} not found in the loaded .proto` });
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) md.set(k, v);
  return new Promise((resolve) => {
    c.client.makeUnaryRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      request,
      md,
      { deadline: Date.now() + timeoutMs },
      (err, res) =>
        resolve(err ? { status: err.code, message: null, error: err.details } : { status: 0, message: protojson(res), error: '' }),
    );
  });
}

/** Serves one VU's requests until it exits. */
function serve(port: MessagePort, signal: Int32Array, counts: { connections: number; requests: number }): () => void {
  const sockets = new Map<number, WebSocket>();
  const grpcClients = new Map<number, GrpcConnection>();
  let nextSocket = 1;
  const wake = (message: unknown): void => {
    port.postMessage(message);
    Atomics.add(signal, 0, 1);
    Atomics.notify(signal, 0);
  };
  const event = (socket: number, e: SocketEvent): void => wake({ kind: 'event', socket, event: e });

  port.on('message', (msg: VuRequest) => {
    if (msg.op === 'http') {
      counts.requests++;
      fetch(msg.url, { method: msg.method, headers: msg.headers, body: msg.body, signal: AbortSignal.timeout(msg.timeoutMs) })
        .then(async (res) => ({
          status: res.status,
          body: msg.binary ? await res.arrayBuffer() : await res.text(),
          headers: Object.fromEntries(res.headers),
          error: '',
        }))
        .catch((err: unknown) => ({ status: 0, body: '', headers: {}, error: String(err) }))
        .then((value) => wake({ kind: 'reply', id: msg.id, value }));
    } else if (msg.op === 'grpc-connect') {
      counts.connections++;
      const id = nextSocket++;
      grpcClients.set(id, grpcConnect(msg.address, msg.protoFiles));
      wake({ kind: 'reply', id: msg.id, value: id });
    } else if (msg.op === 'grpc-invoke') {
      counts.requests++;
      const c = grpcClients.get(msg.connection);
      if (!c) wake({ kind: 'reply', id: msg.id, value: { status: 14, message: null, error: 'not connected' } });
      else
        void grpcInvoke(c, msg.method, msg.request, msg.metadata, msg.timeoutMs).then((value) =>
          wake({ kind: 'reply', id: msg.id, value }),
        );
    } else if (msg.op === 'grpc-close') {
      grpcClients.get(msg.connection)?.client.close();
      grpcClients.delete(msg.connection);
    } else if (msg.op === 'ws-connect') {
      counts.connections++;
      const id = nextSocket++;
      // k6 sends headers as given; `ws` wants the subprotocol as an argument instead.
      const headers = { ...msg.headers };
      const key = Object.keys(headers).find((h) => h.toLowerCase() === 'sec-websocket-protocol');
      const protocols = key ? headers[key].split(',').map((p) => p.trim()) : [];
      if (key) delete headers[key];
      const socket = new WebSocket(msg.url, protocols, { headers });
      sockets.set(id, socket);
      let opened = false;
      socket.on('open', () => {
        opened = true;
        event(id, { type: 'open' });
      });
      socket.on('message', (data) => event(id, { type: 'message', data: data.toString() }));
      socket.on('unexpected-response', (req, res) => {
        event(id, { type: 'refused', status: res.statusCode ?? 0, message: `bad handshake: HTTP ${res.statusCode}` });
        req.destroy();
      });
      socket.on('error', (err) =>
        event(id, opened ? { type: 'error', message: err.message } : { type: 'refused', status: 0, message: err.message }),
      );
      socket.on('close', (code) => {
        sockets.delete(id);
        if (opened) event(id, { type: 'close', code });
      });
      wake({ kind: 'reply', id: msg.id, value: id });
    } else if (msg.op === 'ws-send') {
      sockets.get(msg.socket)?.send(msg.data);
    } else if (msg.op === 'ws-ping') {
      sockets.get(msg.socket)?.ping();
    } else if (msg.op === 'ws-close') {
      const s = sockets.get(msg.socket);
      sockets.delete(msg.socket);
      if (s && s.readyState === WebSocket.OPEN) s.close(msg.code >= 3000 || msg.code === 1000 || msg.code === 1001 ? msg.code : 1000);
      else s?.terminate();
    }
  });
  return () => {
    for (const c of grpcClients.values()) c.client.close();
    for (const s of sockets.values()) s.terminate();
    port.close();
  };
}

async function startVu<T>(
  script: string,
  env: Record<string, string>,
  task: VuTask,
  timeoutMs: number,
): Promise<T & { connections: number; requests: number }> {
  const { port1, port2 } = new MessageChannel();
  const signal = new Int32Array(new SharedArrayBuffer(4));
  const counts = { connections: 0, requests: 0 };
  const stop = serve(port1, signal, counts);
  const workerData: VuData = { script, env, task, port: port2, signal };
  const worker = new Worker(VU_ENTRY, { workerData, transferList: [port2] });
  try {
    const result = await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${script}: the VU did not finish in ${timeoutMs} ms`)), timeoutMs);
      worker.once('message', (m: T) => {
        clearTimeout(timer);
        resolve(m);
      });
      worker.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      worker.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${script}: the VU exited with ${code} before it reported`));
      });
    });
    return { ...result, ...counts };
  } finally {
    await worker.terminate();
    stop();
  }
}

/** The script's `options` and custom metrics, as k6 sees them after the init context ran with `env`. */
export async function loadScript(script: string, env: Record<string, string> = {}): Promise<Loaded> {
  return startVu<Loaded>(script, env, { mode: 'options' }, 30_000);
}

/** What the script's handleSummary returns for k6's summary `data`. */
export async function callHandleSummary(script: string, env: Record<string, string>, data: unknown): Promise<Record<string, string>> {
  return (await startVu<{ summary: Record<string, string> }>(script, env, { mode: 'summary', data }, 30_000)).summary;
}

/** Calls a module's exported function `times` times in a VU (outside the init context). */
export async function callExport<T>(script: string, env: Record<string, string>, name: string, times: number): Promise<T[]> {
  return (await startVu<{ results: T[] }>(script, env, { mode: 'call', name, times }, 30_000)).results;
}

/** Runs `iterations` iterations of the script's default function on one VU of `scenario`, against real servers. */
export async function runScript(
  script: string,
  o: { env: Record<string, string>; scenario: string; iterations: number; timeoutMs?: number },
): Promise<Run> {
  return startVu<Run>(script, o.env, { mode: 'run', scenario: o.scenario, iterations: o.iterations }, o.timeoutMs ?? 120_000);
}
