/**
 * Stand-in for `k6/ws`: `connect` blocks for the whole session and runs its handlers on this
 * thread, as k6 does. Close semantics follow k6's: `socket.close(code = 1001)` calls the
 * 'close' handlers with that code at once; a server close calls them with the server's code,
 * after an 'error' event when that code is not 1000 or 1001; a failed dial or upgrade throws.
 */
import { record, theHost, vu, type SocketEvent } from '../runtime.ts';

type Handler = (...args: unknown[]) => void;
interface Timer {
  at: number;
  every: number;
  fn: () => void;
}

/** A session with no event and no timer for this long is stuck. */
const IDLE_LIMIT_MS = 60_000;

class Socket {
  readonly id: number;
  closed = false;
  private readonly handlers = new Map<string, Handler[]>();
  readonly timers: Timer[] = [];

  constructor(id: number) {
    this.id = id;
  }

  on(event: string, handler: Handler): void {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), handler]);
  }

  fire(event: string, ...args: unknown[]): void {
    for (const h of this.handlers.get(event) ?? []) h(...args);
  }

  send(data: string): void {
    if (this.closed) return;
    record('ws_msgs_sent', 1);
    theHost().post({ op: 'ws-send', socket: this.id, data: String(data) });
  }

  ping(): void {
    if (!this.closed) theHost().post({ op: 'ws-ping', socket: this.id });
  }

  close(code = 1001): void {
    if (this.closed) return;
    theHost().post({ op: 'ws-close', socket: this.id, code });
    this.finish(code);
  }

  finish(code: number): void {
    if (this.closed) return;
    this.closed = true;
    this.fire('close', code);
  }

  setTimeout(fn: () => void, ms: number): void {
    this.timers.push({ at: performance.now() + ms, every: 0, fn });
  }

  setInterval(fn: () => void, ms: number): void {
    this.timers.push({ at: performance.now() + ms, every: Math.max(1, ms), fn });
  }
}

function wsError(message: string) {
  return { error: () => message };
}

function dispatch(socket: Socket, event: SocketEvent): void {
  if (event.type === 'message') {
    record('ws_msgs_received', 1);
    socket.fire('message', event.data);
  } else if (event.type === 'error') {
    socket.fire('error', wsError(event.message));
  } else if (event.type === 'close') {
    if (event.code !== 1000 && event.code !== 1001) socket.fire('error', wsError(`websocket: close ${event.code}`));
    theHost().post({ op: 'ws-close', socket: socket.id, code: event.code });
    socket.finish(event.code);
  }
}

function runDueTimers(socket: Socket): void {
  const now = performance.now();
  for (const t of [...socket.timers].sort((a, b) => a.at - b.at)) {
    if (socket.closed || t.at > now) continue;
    if (t.every) t.at += t.every;
    else socket.timers.splice(socket.timers.indexOf(t), 1);
    t.fn();
  }
}

export function connect(
  url: string,
  paramsOrCallback: unknown,
  maybeCallback?: (socket: Socket) => void,
): { url: string; status: number; headers: Record<string, string>; body: string; error: string } {
  if (vu.init) throw new Error('using websockets in the init context is not supported');
  const callback = (maybeCallback ?? paramsOrCallback) as (socket: Socket) => void;
  const params = (maybeCallback ? paramsOrCallback : {}) as { headers?: Record<string, string> } | null;
  const host = theHost();
  const started = performance.now();
  const id = host.call<number>({ op: 'ws-connect', url, headers: params?.headers ?? {} });
  const first = host.nextEvent(id, IDLE_LIMIT_MS);
  if (!first || first.type !== 'open') {
    host.post({ op: 'ws-close', socket: id, code: 1006 });
    const why = !first ? 'no answer' : first.type === 'refused' ? first.message : first.type;
    throw new Error(`websocket: ${why}`);
  }
  record('ws_connecting', performance.now() - started);
  const socket = new Socket(id);
  try {
    callback(socket);
    socket.fire('open');
    while (!socket.closed) {
      const next = socket.timers.reduce((min, t) => Math.min(min, t.at), Infinity);
      const wait = next === Infinity ? IDLE_LIMIT_MS : Math.max(0, next - performance.now());
      const event = host.nextEvent(id, wait);
      if (event) dispatch(socket, event);
      else if (next === Infinity) throw new Error(`websocket session idle for ${IDLE_LIMIT_MS} ms`);
      runDueTimers(socket);
    }
  } finally {
    if (!socket.closed) {
      host.post({ op: 'ws-close', socket: id, code: 1001 });
      socket.closed = true;
    }
  }
  record('ws_sessions', 1);
  record('ws_session_duration', performance.now() - started);
  return { url, status: 101, headers: {}, body: '', error: '' };
}

export default { connect };
