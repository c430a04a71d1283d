/**
 * Stand-in for `k6/net/grpc`: a Client that loads .proto files in the init context (paths
 * relative to the script, as k6 resolves them), connects once per VU and invokes unary methods,
 * blocking until the host (host.ts, with @grpc/grpc-js) has the answer. Requests are JSON as
 * k6 takes them (bytes as base64); answers come back as k6 gives them: protojson's camelCase
 * names, bytes as base64. Records `grpc_req_duration` as k6 does.
 */
import { dirname, resolve } from 'node:path';
import { record, theHost, vu } from '../../runtime.ts';

interface Reply {
  status: number;
  message: unknown;
  error: string;
}

export const StatusOK = 0;
export const StatusCanceled = 1;
export const StatusUnknown = 2;
export const StatusInvalidArgument = 3;
export const StatusDeadlineExceeded = 4;
export const StatusNotFound = 5;
export const StatusPermissionDenied = 7;
export const StatusResourceExhausted = 8;
export const StatusInternal = 13;
export const StatusUnavailable = 14;
export const StatusUnauthenticated = 16;

/** k6 durations the scripts give (`10s`, `500ms`) in ms. */
function durationMs(d: string | number | undefined): number {
  if (typeof d === 'number') return d;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(d ?? '');
  if (!m) return 60_000;
  return Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : 60_000);
}

export class Client {
  private protoFiles: string[] = [];
  private connection = 0;

  load(importPaths: string[], ...files: string[]): void {
    if (!vu.init) throw new Error('load() is only allowed in the init context');
    const base = dirname(vu.script);
    const roots = importPaths.map((p) => resolve(base, p));
    for (const f of files) this.protoFiles.push(resolve(roots[0] ?? base, f));
  }

  connect(address: string, params: { plaintext?: boolean; timeout?: string } = {}): boolean {
    if (vu.init) throw new Error('connect() is not allowed in the init context');
    if (!params.plaintext) throw new Error('this stand-in connects with plaintext only');
    this.connection = theHost().call<number>({ op: 'grpc-connect', address, protoFiles: this.protoFiles });
    return true;
  }

  invoke(
    method: string,
    request: unknown,
    params: { metadata?: Record<string, string>; timeout?: string; tags?: Record<string, string> } = {},
  ) {
    if (!this.connection) throw new Error('invoke() before connect()');
    const started = performance.now();
    const reply = theHost().call<Reply>({
      op: 'grpc-invoke',
      connection: this.connection,
      method,
      request,
      metadata: params.metadata ?? {},
      timeoutMs: durationMs(params.timeout),
    });
    record('grpc_req_duration', performance.now() - started, { method, name: method, status: String(reply.status), ...params.tags });
    return {
      status: reply.status,
      message: reply.message,
      error: reply.error ? { message: reply.error } : null,
      headers: {},
      trailers: {},
    };
  }

  close(): void {
    if (this.connection) theHost().post({ op: 'grpc-close', connection: this.connection });
    this.connection = 0;
  }
}

export default {
  Client,
  StatusOK,
  StatusCanceled,
  StatusUnknown,
  StatusInvalidArgument,
  StatusDeadlineExceeded,
  StatusNotFound,
  StatusPermissionDenied,
  StatusResourceExhausted,
  StatusInternal,
  StatusUnavailable,
  StatusUnauthenticated,
};
