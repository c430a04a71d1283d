/**
 * The Open Inference Protocol over HTTP (KServe's v2 REST API, on the API's own port), with
 * the binary tensor data extension: a body may be a JSON header of
 * `Inference-Header-Content-Length` bytes followed by the inputs' raw little-endian bytes
 * (`parameters.binary_data_size` on each), and outputs asked for with `binary_data: true` (or
 * `binary_data_output: true` for all) come back the same way, as application/octet-stream.
 * The protocol's mapping onto the core is core/api/inference-protocol.ts; this file is HTTP
 * only: routes, bodies, auth and rate limits as the GraphQL door has them, errors as
 * `{"error": "..."}` with the registry's status.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ServingError, asServingError, badInput } from '../../core/errors/registry.ts';
import type { RequestScope } from '../../core/telemetry/logger.ts';
import type { Principal } from '../../core/api/authorization.ts';
import { outputValues, type InferInput, type InferRequest, type InferResponse } from '../../core/api/inference-protocol.ts';
import { rateLimitRefusal } from '../rate-limit.ts';
import { routeKeyOf, traceIdOf } from '../route-headers.ts';
import type { App } from '../app.ts';

/** The header that says how long the JSON part of a binary body (or answer) is. */
export const HEADER_LENGTH = 'inference-header-content-length';

type Route =
  | { kind: 'server' | 'live' | 'ready' }
  | { kind: 'model' | 'model-ready' | 'infer'; model: string; version?: string }
  | { kind: 'unknown' };

const MODEL_PATH = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(\/ready|\/infer)?\/?$/;

/** The route of a path under /v2. */
export function oipRoute(path: string): Route {
  if (path === '/v2' || path === '/v2/') return { kind: 'server' };
  if (path === '/v2/health/live') return { kind: 'live' };
  if (path === '/v2/health/ready') return { kind: 'ready' };
  const m = MODEL_PATH.exec(path);
  if (!m) return { kind: 'unknown' };
  let model: string;
  let version: string | undefined;
  try {
    model = decodeURIComponent(m[1]);
    version = m[2] === undefined ? undefined : decodeURIComponent(m[2]);
  } catch {
    return { kind: 'unknown' };
  }
  const kind = m[3] === '/ready' ? 'model-ready' : m[3] === '/infer' ? 'infer' : 'model';
  return { kind, model, version };
}

/** The answer's operation name in the request log, per route. */
const OPERATION: Record<Route['kind'], string> = {
  server: 'oip server_metadata',
  live: 'oip server_live',
  ready: 'oip server_ready',
  model: 'oip model_metadata',
  'model-ready': 'oip model_ready',
  infer: 'infer_rest',
  unknown: 'oip',
};

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Reads the body, refusing it (413) once it passes `max` bytes, as chunked bodies declare no length. */
function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > max) {
        over = true;
        reject(new ServingError('PAYLOAD_TOO_LARGE', `request body over ${max} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.once('end', () => {
      if (!over) resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    });
    req.once('error', (e) => reject(new ServingError('BAD_USER_INPUT', `the request body could not be read: ${e.message}`)));
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * An infer request's body, JSON or binary: the JSON header parsed and checked, each binary
 * input's bytes a view of the body (no copy), their sizes held to the bytes that follow.
 */
export function parseInferBody(body: Buffer, headerLength: string | undefined): InferRequest {
  let jsonEnd = body.length;
  if (headerLength !== undefined) {
    const n = Number(headerLength);
    if (!/^\d+$/.test(headerLength.trim()) || !Number.isSafeInteger(n))
      throw badInput('Inference-Header-Content-Length', `expected a byte count, got '${headerLength.slice(0, 40)}'`);
    if (n > body.length)
      throw badInput('Inference-Header-Content-Length', `says the JSON header is ${n} bytes, but the body holds only ${body.length}`);
    jsonEnd = n;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8', 0, jsonEnd));
  } catch (e) {
    throw badInput(
      headerLength === undefined ? 'body' : 'Inference-Header-Content-Length',
      headerLength === undefined
        ? `not JSON: ${(e as Error).message}`
        : `the first ${jsonEnd} bytes are not a JSON header: ${(e as Error).message}`,
    );
  }
  if (!isObject(parsed)) throw badInput('body', 'expected a JSON object with inputs');
  const { id, inputs, outputs, parameters } = parsed;
  if (id !== undefined && typeof id !== 'string') throw badInput('id', 'expected a string');
  if (parameters !== undefined && !isObject(parameters)) throw badInput('parameters', 'expected an object');
  if (!Array.isArray(inputs) || inputs.length === 0) throw badInput('inputs', 'expected at least one input tensor');
  let offset = jsonEnd;
  const tensors: InferInput[] = inputs.map((t: unknown, i) => {
    if (!isObject(t)) throw badInput(`inputs[${i}]`, 'expected a tensor object');
    const params = t.parameters;
    if (params !== undefined && !isObject(params)) throw badInput(`inputs[${i}].parameters`, 'expected an object');
    const binarySize = params?.binary_data_size;
    const tensor: InferInput = { name: t.name as string, datatype: t.datatype as string, shape: t.shape as number[] };
    if (binarySize === undefined) return { ...tensor, data: t.data };
    if (typeof binarySize !== 'number' || !Number.isSafeInteger(binarySize) || binarySize < 0)
      throw badInput(`inputs[${i}].parameters.binary_data_size`, `expected a byte count, got ${JSON.stringify(binarySize)}`);
    if (headerLength === undefined)
      throw badInput(`inputs[${i}].parameters.binary_data_size`, 'binary data needs the Inference-Header-Content-Length header');
    if (t.data !== undefined) throw badInput(`inputs[${i}]`, 'give data or binary_data_size, not both');
    if (offset + binarySize > body.length)
      throw badInput(
        `inputs[${i}].parameters.binary_data_size`,
        `${binarySize} bytes from offset ${offset - jsonEnd} run past the body's ${body.length - jsonEnd} bytes of binary data (truncated?)`,
      );
    const bytes = body.subarray(offset, offset + binarySize);
    offset += binarySize;
    return { ...tensor, bytes };
  });
  if (offset !== body.length)
    throw badInput(
      'binary_data_size',
      `the inputs' binary_data_size add up to ${offset - jsonEnd} bytes, but ${body.length - jsonEnd} follow the JSON header`,
    );
  const allBinary = parameters?.binary_data_output === true;
  let wanted: InferRequest['outputs'];
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) throw badInput('outputs', 'expected a list of requested outputs');
    wanted = outputs.map((o: unknown, i) => {
      if (!isObject(o) || typeof o.name !== 'string') throw badInput(`outputs[${i}].name`, 'expected an output name');
      const p = o.parameters;
      if (p !== undefined && !isObject(p)) throw badInput(`outputs[${i}].parameters`, 'expected an object');
      const binary = p?.binary_data;
      if (binary !== undefined && typeof binary !== 'boolean')
        throw badInput(`outputs[${i}].parameters.binary_data`, 'expected true or false');
      return { name: o.name, binary: binary ?? allBinary };
    });
  }
  return {
    ...(id !== undefined ? { id } : {}),
    inputs: tensors,
    ...(wanted ? { outputs: wanted } : {}),
    parameters: parameters ?? {},
  };
}

/**
 * The answer to an infer request: JSON, or when any output is binary, the JSON header (each
 * binary output with its `binary_data_size`, no data) and the outputs' bytes after it.
 */
export function inferResponseBody(r: InferResponse, allBinary: boolean): { body: Buffer; headerLength?: number } {
  const binaries: Buffer[] = [];
  const outputs = r.outputs.map((o) => {
    const head = { name: o.name, datatype: o.datatype, shape: o.shape };
    if (o.binary || allBinary) {
      binaries.push(o.bytes);
      return { ...head, parameters: { binary_data_size: o.bytes.length } };
    }
    return { ...head, data: Array.from(outputValues(o)) };
  });
  const header = Buffer.from(
    JSON.stringify({ model_name: r.model_name, model_version: r.model_version, ...(r.id !== undefined ? { id: r.id } : {}), outputs }),
  );
  if (!binaries.length) return { body: header };
  return { body: Buffer.concat([header, ...binaries]), headerLength: header.length };
}

/** Serves one request under /v2. */
export async function serveOip(app: App, req: IncomingMessage, res: ServerResponse, path: string, scope: RequestScope): Promise<void> {
  const route = oipRoute(path);
  scope.operation = OPERATION[route.kind];
  if ('model' in route) scope.model = route.model;
  try {
    const method = req.method ?? 'GET';
    const want = route.kind === 'infer' ? 'POST' : 'GET';
    if (route.kind === 'unknown') {
      req.resume();
      sendJson(res, 404, { error: `no such endpoint: ${method} ${path}` });
      return;
    }
    if (method !== want && !(want === 'GET' && method === 'HEAD')) {
      req.resume();
      sendJson(res, 405, { error: `${path} takes ${want}` }, { allow: want });
      return;
    }
    const { oip } = app;
    switch (route.kind) {
      case 'server':
        req.resume();
        return sendJson(res, 200, oip.serverMetadata());
      case 'live':
        req.resume();
        return sendJson(res, 200, { live: true });
      case 'ready': {
        req.resume();
        // The spec: 200 for true, a 4xx for false.
        const ready = await oip.serverReady();
        return sendJson(res, ready ? 200 : 400, { ready });
      }
      default:
        break;
    }
    const principal = authenticate(app, req);
    if (route.kind === 'model') {
      req.resume();
      return sendJson(res, 200, oip.modelMetadata(principal, route.model, route.version));
    }
    if (route.kind === 'model-ready') {
      req.resume();
      const ready = await oip.modelReady(principal, route.model, route.version);
      return sendJson(res, ready ? 200 : 400, { name: route.model, ...(route.version ? { version: route.version } : {}), ready });
    }
    // infer: the rate limit first (as GraphQL's), then the body.
    const refusal = await rateLimitRefusal(app.limiter, principal, req);
    if (refusal) throw refusal;
    const header = req.headers[HEADER_LENGTH];
    const body = await readBody(req, app.config.http.maxBodyBytes);
    const request = parseInferBody(body, Array.isArray(header) ? header[0] : header);
    const answer = await oip.infer(request, {
      model: route.model,
      version: route.version,
      principal,
      requestId: scope.requestId,
      operation: 'infer_rest',
      routeKey: routeKeyOf(req.headers),
      traceId: traceIdOf(req.headers),
    });
    const { body: out, headerLength } = inferResponseBody(answer, request.parameters?.binary_data_output === true);
    res.writeHead(200, {
      'content-type': headerLength === undefined ? 'application/json' : 'application/octet-stream',
      'content-length': out.length,
      ...(headerLength === undefined ? {} : { [HEADER_LENGTH]: String(headerLength) }),
    });
    res.end(out);
  } catch (e) {
    const err = asServingError(e);
    scope.code = err.code;
    if (err.code === 'INTERNAL_SERVER_ERROR') app.logger.error({ err: e }, 'inference protocol request failed');
    app.countRejection(err.code);
    // A body refused while unread cannot leave the connection usable: close it.
    const close: Record<string, string> = err.code === 'PAYLOAD_TOO_LARGE' ? { connection: 'close' } : {};
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendJson(
      res,
      err.status,
      { error: err.message },
      {
        ...(err.retryAfterSeconds !== undefined ? { 'retry-after': String(err.retryAfterSeconds) } : {}),
        ...close,
      },
    );
    if (err.code === 'PAYLOAD_TOO_LARGE') req.resume();
  }
}

/** The request's principal, as GraphQL's door finds it: 401 for a missing or unknown key when auth is on. */
function authenticate(app: App, req: IncomingMessage): Principal {
  const principal = app.auth.authenticate(app.auth.enabled ? app.auth.keyFromHeaders(req.headers) : undefined);
  if (!principal) throw new ServingError('UNAUTHENTICATED');
  return principal;
}
