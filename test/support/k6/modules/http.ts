/** Stand-in for `k6/http`: a blocking request, done for real by the host, with k6's metrics. */
import { record, theHost, vu } from '../runtime.ts';

interface Params {
  headers?: Record<string, string>;
  tags?: Record<string, string>;
  timeout?: number;
  /** `binary`: the body is an ArrayBuffer, as k6 gives it. */
  responseType?: 'text' | 'binary';
}
interface Reply {
  status: number;
  body: string | ArrayBuffer;
  headers: Record<string, string>;
  error: string;
}

export interface Response extends Reply {
  url: string;
  timings: { duration: number };
  json(): unknown;
}

export function request(method: string, url: string, body?: string | ArrayBuffer | null, params: Params = {}): Response {
  if (vu.init) throw new Error('making HTTP requests in the init context is not supported');
  const started = performance.now();
  const reply = theHost().call<Reply>({
    op: 'http',
    method,
    url,
    body: body ?? undefined,
    headers: params.headers ?? {},
    timeoutMs: params.timeout ?? 60_000,
    binary: params.responseType === 'binary',
  });
  const duration = performance.now() - started;
  const tags = { method, name: url, status: String(reply.status), ...params.tags };
  // k6's default: a response outside 200-399 (or none) is a failed request.
  const failed = reply.status < 200 || reply.status >= 400;
  record('http_reqs', 1, tags);
  record('http_req_duration', duration, { ...tags, expected_response: String(!failed) });
  record('http_req_failed', failed ? 1 : 0, tags);
  return {
    ...reply,
    url,
    timings: { duration },
    json() {
      return JSON.parse(typeof reply.body === 'string' ? reply.body : Buffer.from(reply.body).toString('utf8'));
    },
  };
}

export function post(url: string, body?: string | ArrayBuffer | null, params?: Params): Response {
  return request('POST', url, body, params);
}

export function get(url: string, params?: Params): Response {
  return request('GET', url, null, params);
}

export default { request, post, get };
