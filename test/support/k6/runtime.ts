/**
 * The VU side of a stand-in for k6's runtime, so tests can run `loadtests/*.js` under Node (k6
 * itself is not installable here). k6 runs a VU's code synchronously: `http.post` and
 * `ws.connect` block until done. Here a VU is a worker thread that blocks on Atomics.wait
 * while the host thread does the real HTTP and WebSocket I/O (see host.ts), and reads the
 * host's replies with receiveMessageOnPort. Only k6's script API is stood in for; the
 * requests reach a real server.
 */
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';

export type MetricType = 'counter' | 'gauge' | 'rate' | 'trend';
export interface MetricDefinition {
  type: MetricType;
  /** Trend of durations (k6's `isTime`): the summary calls it `contains: 'time'`. */
  isTime: boolean;
}
export interface Sample {
  metric: string;
  value: number;
  tags: Record<string, string>;
}

/** k6's built-in metrics a script may put thresholds on. */
export const BUILTIN_METRICS: Record<string, MetricDefinition> = {
  checks: { type: 'rate', isTime: false },
  data_received: { type: 'counter', isTime: false },
  data_sent: { type: 'counter', isTime: false },
  dropped_iterations: { type: 'counter', isTime: false },
  group_duration: { type: 'trend', isTime: true },
  http_req_blocked: { type: 'trend', isTime: true },
  http_req_connecting: { type: 'trend', isTime: true },
  http_req_duration: { type: 'trend', isTime: true },
  http_req_failed: { type: 'rate', isTime: false },
  http_req_receiving: { type: 'trend', isTime: true },
  http_req_sending: { type: 'trend', isTime: true },
  http_req_tls_handshaking: { type: 'trend', isTime: true },
  http_req_waiting: { type: 'trend', isTime: true },
  http_reqs: { type: 'counter', isTime: false },
  iteration_duration: { type: 'trend', isTime: true },
  iterations: { type: 'counter', isTime: false },
  vus: { type: 'gauge', isTime: false },
  vus_max: { type: 'gauge', isTime: false },
  grpc_req_duration: { type: 'trend', isTime: true },
  ws_connecting: { type: 'trend', isTime: true },
  ws_msgs_received: { type: 'counter', isTime: false },
  ws_msgs_sent: { type: 'counter', isTime: false },
  ws_ping: { type: 'trend', isTime: true },
  ws_session_duration: { type: 'trend', isTime: true },
  ws_sessions: { type: 'counter', isTime: false },
};

/** Thrown by `exec.test.abort()`: ends the run, as k6 does. */
export class TestAborted extends Error {}

/** What the VU knows about itself; `scenario` is the tag k6 puts on every sample. */
export const vu = { id: 1, scenario: 'default', iteration: 0, init: true, script: '' };
export const samples: Sample[] = [];
export const definitions: Record<string, MetricDefinition> = {};

export function define(name: string, definition: MetricDefinition): void {
  if (!/^[a-zA-Z_][a-zA-Z0-9_]{0,127}$/.test(name)) throw new Error(`invalid metric name "${name}"`);
  const known = BUILTIN_METRICS[name] ?? definitions[name];
  if (known && known.type !== definition.type) throw new Error(`metric "${name}" already exists as a ${known.type}`);
  if (!vu.init) throw new Error('metrics can only be created in the init context');
  definitions[name] = definition;
}

export function record(metric: string, value: number, tags: Record<string, string> = {}): void {
  if (vu.init) throw new Error(`${metric}: metrics can only be added outside the init context`);
  samples.push({ metric, value, tags: { scenario: vu.scenario, ...tags } });
}

/** The longest a VU waits for one reply from the host; beyond it the host is stuck, not slow. */
const HOST_LIMIT_MS = 60_000;

export type SocketEvent =
  | { type: 'open' }
  | { type: 'message'; data: string }
  | { type: 'close'; code: number }
  | { type: 'error'; message: string }
  | { type: 'refused'; message: string; status: number };
type HostMessage = { kind: 'reply'; id: number; value: unknown } | { kind: 'event'; socket: number; event: SocketEvent };

/** The VU's blocking line to the host thread. */
export class Host {
  private readonly port: MessagePort;
  private readonly signal: Int32Array;
  private nextId = 1;
  private readonly replies = new Map<number, unknown>();
  private readonly events = new Map<number, SocketEvent[]>();

  constructor(port: MessagePort, signal: Int32Array) {
    this.port = port;
    this.signal = signal;
  }

  post(message: Record<string, unknown>): void {
    this.port.postMessage(message);
  }

  /** Sends a request and blocks until its reply. */
  call<T>(message: Record<string, unknown>): T {
    const id = this.nextId++;
    this.post({ ...message, id });
    const found = this.waitFor(() => (this.replies.has(id) ? { value: this.replies.get(id) } : undefined), HOST_LIMIT_MS);
    if (!found) throw new Error(`the host did not answer ${String(message.op)} in ${HOST_LIMIT_MS} ms`);
    this.replies.delete(id);
    return found.value as T;
  }

  /** The socket's next event, or undefined after `timeoutMs`. */
  nextEvent(socket: number, timeoutMs: number): SocketEvent | undefined {
    return this.waitFor(() => this.events.get(socket)?.shift(), timeoutMs);
  }

  private drain(): void {
    for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) {
      const msg = m.message as HostMessage;
      if (msg.kind === 'reply') this.replies.set(msg.id, msg.value);
      else {
        const queue = this.events.get(msg.socket) ?? [];
        queue.push(msg.event);
        this.events.set(msg.socket, queue);
      }
    }
  }

  private waitFor<T>(take: () => T | undefined, timeoutMs: number): T | undefined {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      // Read the counter before draining: a message posted after the drain bumps it, so the
      // wait below returns at once instead of missing that message.
      const seen = Atomics.load(this.signal, 0);
      this.drain();
      const got = take();
      if (got !== undefined) return got;
      const left = deadline - performance.now();
      if (left <= 0) return undefined;
      Atomics.wait(this.signal, 0, seen, left);
    }
  }
}

let host: Host | undefined;
export function connectHost(h: Host): void {
  host = h;
}
export function theHost(): Host {
  if (!host) throw new Error('no host: this VU was started without one');
  return host;
}

/** k6's sleep: the VU blocks. */
export function blockFor(ms: number): void {
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
