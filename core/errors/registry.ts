/**
 * One registry of error codes. Each code has one HTTP status; every transport (GraphQL over
 * HTTP, SSE, WebSocket; the Open Inference Protocol over REST and gRPC, server/oip/) and every process (API, worker) uses the same table, so clients can
 * rely on `extensions.code`. `retryAfterSeconds` is the `Retry-After` a code carries unless
 * the error sets its own (RATE_LIMITED sets it from the client's bucket).
 */

export const ERROR_CODES = {
  /** The document is not GraphQL (or nests too deeply to parse). */
  GRAPHQL_PARSE_FAILED: { status: 400, message: 'The query could not be parsed' },
  /** The query is not valid against the schema, or is over a depth, cost or size limit. */
  GRAPHQL_VALIDATION_FAILED: { status: 400, message: 'The query is not valid' },
  BAD_USER_INPUT: { status: 400, message: 'Invalid input' },
  UNAUTHENTICATED: { status: 401, message: 'Missing or unknown API key' },
  FORBIDDEN: { status: 403, message: 'Not allowed' },
  MODEL_NOT_FOUND: { status: 404, message: 'Unknown model' },
  MODEL_VERSION_NOT_FOUND: { status: 404, message: 'Unknown model version' },
  PREDICTION_NOT_FOUND: { status: 404, message: 'Unknown prediction id' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'Request too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Send GraphQL as application/json (or a GET with query parameters)' },
  RATE_LIMITED: { status: 429, message: 'Too many requests' },
  CANCELLED: { status: 409, message: 'Prediction cancelled' },
  NOT_CANCELLABLE: { status: 409, message: 'The prediction has already started or finished' },
  /** The model ran, but what it computed for this input is NaN or infinite: no number or label is reported. */
  NON_FINITE_OUTPUT: { status: 422, message: 'The model produced NaN or infinite output for this input' },
  INFERENCE_FAILED: { status: 500, message: 'Inference failed' },
  /** The version's file would not open (corrupt or incompatible) when a worker loaded it on demand: FAILED with its reason. */
  MODEL_LOAD_FAILED: { status: 500, message: 'The model version failed to load' },
  INTERNAL_SERVER_ERROR: { status: 500, message: 'Unexpected error' },
  /**
   * A worker's answer the API cannot use: an output whose size disagrees with its declared
   * shape, a reply that does not decode. The message names the model; gRPC maps it to INTERNAL.
   */
  BAD_GATEWAY: { status: 502, message: "The model's answer could not be used" },
  MODEL_NOT_READY: { status: 503, retryAfterSeconds: 1, message: 'Model not ready' },
  SERVICE_UNAVAILABLE: { status: 503, retryAfterSeconds: 1, message: 'Service unavailable' },
  QUEUE_FULL: { status: 503, retryAfterSeconds: 1, message: 'No capacity, try again later' },
  /** The version needs more memory than a worker's whole model budget (`workers.modelMemoryBytes`): it can never be loaded there. The message names both sizes. */
  MODEL_TOO_LARGE: { status: 507, message: "The model version does not fit in a worker's model memory budget" },
  DEADLINE_EXCEEDED: { status: 504, message: 'Prediction timed out' },
  /** Accepted work whose job is gone: a Redis master failed over before its replica had the job (or its result). Stored as the record's error. */
  WORK_LOST: { status: 503, message: 'The work was lost with a Redis node; submit it again' },
} as const satisfies Record<string, { status: number; retryAfterSeconds?: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ServingErrorOptions {
  /** Seconds a client should wait before retrying (sent as `Retry-After`). */
  retryAfterSeconds?: number;
  /** The input field at fault, for BAD_USER_INPUT. */
  field?: string;
  cause?: unknown;
}

/** An error a client may see: a stable code, its HTTP status, and a message safe to show. */
export class ServingError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryAfterSeconds?: number;
  readonly field?: string;

  constructor(code: ErrorCode, message?: string, options: ServingErrorOptions = {}) {
    super(message ?? ERROR_CODES[code].message, { cause: options.cause });
    this.name = 'ServingError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.field = options.field;
    const entry = ERROR_CODES[code] as { retryAfterSeconds?: number };
    this.retryAfterSeconds = options.retryAfterSeconds ?? entry.retryAfterSeconds;
  }

  /** The plain form stored with results and sent between processes. */
  toJSON(): SerializedError {
    return { code: this.code, message: this.message, ...(this.field ? { field: this.field } : {}) };
  }
}

export interface SerializedError {
  code: ErrorCode;
  message: string;
  field?: string;
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

export function badInput(field: string, message: string): ServingError {
  return new ServingError('BAD_USER_INPUT', `${field}: ${message}`, { field });
}

/** Rebuilds an error received from another process; unknown codes become INTERNAL_SERVER_ERROR. */
export function fromSerialized(e: SerializedError): ServingError {
  return isErrorCode(e.code) ? new ServingError(e.code, e.message, { field: e.field }) : new ServingError('INTERNAL_SERVER_ERROR');
}

/**
 * True for errors that come from a lost or refused Redis connection, or a cluster between
 * masters (a failover, a slot on the move: CLUSTERDOWN, TRYAGAIN, redirections run out). ioredis
 * raises most of these as plain Errors whose only mark is their text ("Connection is closed",
 * "Stream isn't writeable", the offline-queue refusal, socket errno names, the cluster's
 * replies), so they are recognised here, in one place, by message, and by errno code where
 * there is one.
 */
export function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const m = err.message;
  return (
    /Connection is closed|Command aborted due to connection close|Stream isn't writeable|enableOfflineQueue|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|MaxRetriesPerRequest|connect ETIMEDOUT|LOADING|Command timed out|CLUSTERDOWN|TRYAGAIN|Too many Cluster redirections|None of startup nodes is available|Failed to refresh slots cache|Cluster is (ended|disconnected|disconnecting)|No (sharded )?subscriber for|^(MOVED|ASK) \d+/i.test(
      m,
    ) || (err as { code?: string }).code === 'ECONNREFUSED'
  );
}

/** Redis trouble becomes a 503 the client can retry; ServingErrors pass through. */
export function asServingError(e: unknown): ServingError {
  if (e instanceof ServingError) return e;
  if (isRedisUnavailable(e))
    return new ServingError('SERVICE_UNAVAILABLE', 'the queue (Redis) is unreachable; try again later', { cause: e, retryAfterSeconds: 1 });
  return new ServingError('INTERNAL_SERVER_ERROR', undefined, { cause: e });
}
