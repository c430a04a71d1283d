/**
 * The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (our own .proto,
 * grpc_predict_v2.proto beside this file) with @grpc/grpc-js, on `grpc.port`. The same core as
 * the REST and GraphQL doors (core/api/inference-protocol.ts): the key in the call's metadata
 * (`x-api-key`, or the configured header, or `authorization: Bearer`), the same rate limits,
 * the client's deadline as the request's, `grpc.maxMessageBytes` for messages both ways.
 * Values come as `raw_input_contents` (bytes, one per input) or typed `contents`; the answer
 * uses the form the request used. Errors are gRPC status codes mapped from the registry, with
 * our code in the `x-batchline-code` trailer.
 */
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ServingError, asServingError, type ErrorCode } from '../../core/errors/registry.ts';
import { requestScope, type RequestScope } from '../../core/telemetry/logger.ts';
import type { Principal } from '../../core/api/authorization.ts';
import { outputValues, type InferInput, type InferRequest } from '../../core/api/inference-protocol.ts';
import { rateLimitRefusal } from '../rate-limit.ts';
import { traceIdOf } from '../route-headers.ts';
import { contextWith, endSpan, startServerSpan, withContext } from '../../core/telemetry/trace.ts';

const SERVICE = 'inference.GRPCInferenceService';
import type { App } from '../app.ts';

export const PROTO_PATH = fileURLToPath(new URL('./grpc_predict_v2.proto', import.meta.url));

/** How proto-loader reads messages: field names as in the .proto, int64 as numbers, defaults filled in. */
export const PROTO_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

/** Each registry code's gRPC status. BAD_GATEWAY (a worker's answer the API cannot use) is INTERNAL: retrying the same input does not help. */
export const GRPC_STATUS: Record<ErrorCode, grpc.status> = {
  GRAPHQL_PARSE_FAILED: grpc.status.INVALID_ARGUMENT,
  GRAPHQL_VALIDATION_FAILED: grpc.status.INVALID_ARGUMENT,
  BAD_USER_INPUT: grpc.status.INVALID_ARGUMENT,
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  FORBIDDEN: grpc.status.PERMISSION_DENIED,
  MODEL_NOT_FOUND: grpc.status.NOT_FOUND,
  MODEL_VERSION_NOT_FOUND: grpc.status.NOT_FOUND,
  PREDICTION_NOT_FOUND: grpc.status.NOT_FOUND,
  PAYLOAD_TOO_LARGE: grpc.status.RESOURCE_EXHAUSTED,
  UNSUPPORTED_MEDIA_TYPE: grpc.status.INVALID_ARGUMENT,
  RATE_LIMITED: grpc.status.RESOURCE_EXHAUSTED,
  CANCELLED: grpc.status.CANCELLED,
  NOT_CANCELLABLE: grpc.status.FAILED_PRECONDITION,
  NON_FINITE_OUTPUT: grpc.status.INVALID_ARGUMENT,
  INFERENCE_FAILED: grpc.status.INTERNAL,
  // A version whose file broke after the repository check: every worker would fail it alike.
  MODEL_LOAD_FAILED: grpc.status.INTERNAL,
  // A version larger than a worker's whole model memory budget (HTTP 507 Insufficient Storage).
  MODEL_TOO_LARGE: grpc.status.RESOURCE_EXHAUSTED,
  INTERNAL_SERVER_ERROR: grpc.status.INTERNAL,
  BAD_GATEWAY: grpc.status.INTERNAL,
  MODEL_NOT_READY: grpc.status.UNAVAILABLE,
  SERVICE_UNAVAILABLE: grpc.status.UNAVAILABLE,
  QUEUE_FULL: grpc.status.UNAVAILABLE,
  DEADLINE_EXCEEDED: grpc.status.DEADLINE_EXCEEDED,
  WORK_LOST: grpc.status.UNAVAILABLE,
};

/** The loaded service definition (for the server, and for clients: tests, scripts/oip-grpc-client.ts). */
export function loadInferenceService(): grpc.GrpcObject {
  const definition = protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS);
  return grpc.loadPackageDefinition(definition);
}

type Contents = Partial<Record<string, unknown[]>>;

interface InputTensor {
  name: string;
  datatype: string;
  shape: number[];
  contents: Contents | null;
}

interface ModelInferRequest {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Record<string, Record<string, unknown>>;
  inputs: InputTensor[];
  outputs: { name: string }[];
  raw_input_contents: Buffer[];
}

/** Where each datatype's typed values are in InferTensorContents. */
const CONTENTS_FIELD: Record<string, string> = {
  BOOL: 'bool_contents',
  INT8: 'int_contents',
  INT16: 'int_contents',
  INT32: 'int_contents',
  INT64: 'int64_contents',
  UINT8: 'uint_contents',
  UINT16: 'uint_contents',
  UINT32: 'uint_contents',
  UINT64: 'uint64_contents',
  FP16: 'fp32_contents',
  FP32: 'fp32_contents',
  FP64: 'fp64_contents',
  BYTES: 'bytes_contents',
};

/** A ModelInfer request as the protocol's transport-free request. */
function toInferRequest(req: ModelInferRequest): InferRequest {
  const raw = req.raw_input_contents ?? [];
  if (raw.length > 0 && raw.length !== req.inputs.length)
    throw new ServingError(
      'BAD_USER_INPUT',
      `raw_input_contents: ${raw.length} entries for ${req.inputs.length} inputs (give one per input, or none and use contents)`,
      { field: 'raw_input_contents' },
    );
  const inputs: InferInput[] = req.inputs.map((t, i) => {
    const head = { name: t.name, datatype: t.datatype, shape: t.shape };
    const field = CONTENTS_FIELD[t.datatype];
    const typed = t.contents && field ? t.contents[field] : undefined;
    if (raw.length > 0) {
      if (t.contents && Object.values(t.contents).some((v) => Array.isArray(v) && v.length > 0))
        throw new ServingError('BAD_USER_INPUT', `inputs[${i}]: give its values in contents or raw_input_contents, not both`, {
          field: `inputs[${i}]`,
        });
      return { ...head, bytes: raw[i] };
    }
    return { ...head, data: typed ?? [] };
  });
  const timeout = req.parameters?.timeout_ms?.int64_param;
  return {
    ...(req.id ? { id: req.id } : {}),
    inputs,
    ...(req.outputs?.length ? { outputs: req.outputs.map((o) => ({ name: o.name })) } : {}),
    parameters: timeout !== undefined ? { timeout_ms: timeout } : {},
  };
}

/** The call's metadata as plain headers (lower-case names, first value), for the authenticator. */
function headersOf(metadata: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata.getMap())) if (typeof v === 'string') out[k] = v;
  return out;
}

/** The address in a peer string (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`). */
function peerAddress(peer: string): string {
  const m = /^(?:ipv[46]:)?\[?([^\]]*?)\]?:\d+$/.exec(peer);
  return m ? m[1] : peer;
}

type Handler<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, scope: RequestScope) => Promise<Res>;

export interface GrpcDoor {
  port: number;
  /** Stops taking calls; calls in flight finish (resolves when they have), or are cut at `force`. */
  shutdown(): Promise<void>;
  force(): void;
}

/** Serves `inference.GRPCInferenceService` on `host:port` (port 0: a free one); resolves with the bound port. */
export async function startGrpc(app: App, port: number, host: string): Promise<GrpcDoor> {
  const { config, logger, oip, auth, limiter } = app;
  const pkg = loadInferenceService() as unknown as { inference: { GRPCInferenceService: grpc.ServiceClientConstructor } };
  const server = new grpc.Server({
    'grpc.max_receive_message_length': config.grpc.maxMessageBytes,
    'grpc.max_send_message_length': config.grpc.maxMessageBytes,
    // Channelz keeps per-call statistics nobody reads here; off, each call costs less.
    'grpc.enable_channelz': 0,
  });
  const mode = config.log.requests;

  /** The caller, from its `x-api-key` metadata (`headers`: the call's, when already read). */
  const principalOf = (call: grpc.ServerUnaryCall<unknown, unknown>, headers?: Record<string, string>): Principal => {
    const principal = auth.authenticate(auth.enabled ? auth.keyFromHeaders(headers ?? headersOf(call.metadata)) : undefined);
    if (!principal) throw new ServingError('UNAUTHENTICATED');
    return principal;
  };

  /** One unary method: request id, scope, log line, errors mapped to statuses. */
  const unary =
    <Req, Res>(method: string, operation: string, handler: Handler<Req, Res>) =>
    (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>): void => {
      const started = performance.now();
      const given = call.metadata.get('x-request-id')[0];
      const requestId = typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : randomUUID();
      const scope: RequestScope = { requestId, operation };
      // Traced, a call is a server span continuing the caller's `traceparent` metadata, as an HTTP request is.
      const traced = startServerSpan(
        `${SERVICE}/${method}`,
        (name) => {
          const v = call.metadata.get(name)[0];
          return typeof v === 'string' ? v : undefined;
        },
        { 'rpc.system': 'grpc', 'rpc.service': SERVICE, 'rpc.method': method, 'batchline.request_id': requestId },
      );
      const finish = (status: grpc.status, code?: string, httpStatus = 200): void => {
        if (traced) {
          traced.span.setAttribute('rpc.grpc.status_code', status);
          if (scope.model) traced.span.setAttribute('batchline.model', scope.model);
          // A server span fails on what the server failed at (a 5xx), not on the client's mistakes.
          endSpan(traced.span, httpStatus >= 500 ? { code, message: grpc.status[status] } : undefined);
        }
        if (mode === 'off' || (mode === 'errors' && status === grpc.status.OK)) return;
        logger.info(
          {
            requestId,
            transport: 'grpc',
            method,
            operation: scope.operation,
            model: scope.model,
            status: grpc.status[status],
            code,
            ms: Math.round((performance.now() - started) * 100) / 100,
          },
          'request',
        );
      };
      requestScope.run(scope, () =>
        withContext(traced && contextWith(traced.span, traced.parent), () => {
          // A handler that throws before its first await is answered like one that rejects.
          new Promise<Res>((resolve) => resolve(handler(call, scope))).then(
            (res) => {
              // The request id goes back in the trailers (sending headers of its own cost each call more).
              const trailer = new grpc.Metadata();
              trailer.set('x-request-id', requestId);
              callback(null, res, trailer);
              finish(grpc.status.OK);
            },
            (e: unknown) => {
              const err = asServingError(e);
              if (err.code === 'INTERNAL_SERVER_ERROR') logger.error({ err: e, requestId }, 'gRPC inference protocol call failed');
              app.countRejection(err.code);
              const trailer = new grpc.Metadata();
              trailer.set('x-request-id', requestId);
              trailer.set('x-batchline-code', err.code);
              if (err.retryAfterSeconds !== undefined) trailer.set('retry-after', String(err.retryAfterSeconds));
              const status = GRPC_STATUS[err.code];
              callback({ code: status, details: err.message, metadata: trailer });
              finish(status, err.code, err.status);
            },
          );
        }),
      );
    };

  const service: grpc.UntypedServiceImplementation = {
    ServerLive: unary('ServerLive', 'oip server_live', () => Promise.resolve({ live: true })),
    ServerReady: unary('ServerReady', 'oip server_ready', async () => ({ ready: await oip.serverReady() })),
    ServerMetadata: unary('ServerMetadata', 'oip server_metadata', () => Promise.resolve(oip.serverMetadata())),
    ModelMetadata: unary<{ name: string; version: string }, unknown>('ModelMetadata', 'oip model_metadata', (call, scope) => {
      scope.model = call.request.name;
      return Promise.resolve(oip.modelMetadata(principalOf(call), call.request.name, call.request.version || undefined));
    }),
    ModelReady: unary<{ name: string; version: string }, unknown>('ModelReady', 'oip model_ready', async (call, scope) => {
      scope.model = call.request.name;
      return { ready: await oip.modelReady(principalOf(call), call.request.name, call.request.version || undefined) };
    }),
    ModelInfer: unary<ModelInferRequest, unknown>('ModelInfer', 'infer_grpc', async (call, scope) => {
      const req = call.request;
      scope.model = req.model_name;
      const headers = headersOf(call.metadata);
      const principal = principalOf(call, headers);
      if (!req.model_name) throw new ServingError('BAD_USER_INPUT', 'model_name: expected a model name', { field: 'model_name' });
      // The client's deadline is the request's (capped by predict.timeoutMs, as every request is).
      const deadline = call.getDeadline();
      const at = deadline instanceof Date ? deadline.getTime() : deadline;
      let timeoutMs: number | undefined;
      if (Number.isFinite(at)) {
        timeoutMs = Math.floor(at - Date.now());
        if (timeoutMs <= 0) throw new ServingError('DEADLINE_EXCEEDED', 'the call reached its deadline before it was run');
      }
      const refusal = await rateLimitRefusal(limiter, principal, { socket: { remoteAddress: peerAddress(call.getPeer()) } });
      if (refusal) throw refusal;
      const raw = (req.raw_input_contents?.length ?? 0) > 0;
      const answer = await oip.infer(toInferRequest(req), {
        model: req.model_name,
        version: req.model_version || undefined,
        principal,
        requestId: scope.requestId,
        operation: 'infer_grpc',
        timeoutMs,
        traceId: traceIdOf(headers),
      });
      const head = (o: (typeof answer.outputs)[number]) => ({ name: o.name, datatype: o.datatype, shape: o.shape });
      return {
        model_name: answer.model_name,
        model_version: answer.model_version,
        id: answer.id ?? '',
        outputs: answer.outputs.map((o) =>
          raw
            ? head(o)
            : {
                ...head(o),
                contents: { [CONTENTS_FIELD[o.datatype]]: Array.from(outputValues(o), (v) => (o.datatype === 'BOOL' ? v !== 0 : v)) },
              },
        ),
        ...(raw ? { raw_output_contents: answer.outputs.map((o) => o.bytes) } : {}),
      };
    }),
  };
  server.addService(pkg.inference.GRPCInferenceService.service, service);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  let shutting: Promise<void> | undefined;
  return {
    port: bound,
    shutdown: () => (shutting ??= new Promise<void>((resolve) => server.tryShutdown(() => resolve()))),
    force: () => server.forceShutdown(),
  };
}
