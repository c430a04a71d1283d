/**
 * ServingError -> GraphQLError with `extensions.code` and `extensions.http` (status and
 * Retry-After), which yoga turns into the response status. Anything unexpected is masked:
 * the client gets INTERNAL_SERVER_ERROR and no stack; the log gets the detail.
 */
import { GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { ERROR_CODES, ServingError, type ErrorCode } from '../core/errors/registry.ts';
import type { Logger } from '../core/telemetry/logger.ts';

function findServingError(error: unknown): ServingError | undefined {
  let e: unknown = error;
  for (let i = 0; i < 5 && e; i++) {
    if (e instanceof ServingError) return e;
    e = (e as { originalError?: unknown; cause?: unknown }).originalError ?? (e as { cause?: unknown }).cause;
  }
  return undefined;
}

export function toGraphQLError(err: ServingError, base?: GraphQLError): GraphQLError {
  const headers: Record<string, string> = {};
  if (err.retryAfterSeconds !== undefined) headers['Retry-After'] = String(err.retryAfterSeconds);
  return new GraphQLError(err.message, {
    nodes: base?.nodes,
    source: base?.source,
    positions: base?.positions,
    path: base?.path,
    extensions: {
      code: err.code,
      ...(err.field ? { field: err.field } : {}),
      ...(err.retryAfterSeconds !== undefined ? { retryAfter: err.retryAfterSeconds } : {}),
      http: { status: err.status, headers },
    },
  });
}

/**
 * The JSON body of an answer given outside yoga (a request refused before it is read), in
 * the shape yoga gives its own: `extensions` without `http`, which is the status line's.
 */
export function errorResponseBody(err: ServingError): string {
  const { http: _http, ...extensions } = toGraphQLError(err).extensions;
  return JSON.stringify({ errors: [{ message: err.message, extensions }] });
}

/**
 * graphql ships CommonJS and ESM copies; a bundler or test runner may load both, so an
 * error's class is recognised by name, not by `instanceof` (as yoga does).
 */
function isGraphQLError(e: unknown): e is GraphQLError {
  return e instanceof Error && e.name === 'GraphQLError';
}

/** Errors graphql-js or yoga raise about the request itself, not our failures. */
function isClientError(error: GraphQLError): boolean {
  const status = (error.extensions?.http as { status?: number } | undefined)?.status;
  if (status !== undefined) return status >= 400 && status < 500;
  return !error.originalError || isGraphQLError(error.originalError);
}

/** yoga's `maskedErrors.maskError`. */
export function maskError(logger: Logger) {
  return (error: unknown, message: string): Error => {
    const serving = findServingError(error);
    if (serving) {
      // An unexpected failure wrapped on its way up (asServingError): the client gets the code, the log the cause.
      if (serving.code === 'INTERNAL_SERVER_ERROR' && serving.cause !== undefined) {
        const cause = serving.cause;
        logger.error({ err: cause instanceof Error ? { message: cause.message, stack: cause.stack } : String(cause) }, 'unexpected error');
      }
      return toGraphQLError(serving, isGraphQLError(error) ? error : undefined);
    }
    if (isGraphQLError(error) && isClientError(error)) {
      // Parse, validation, bad JSON and variable coercion errors: the client's mistake.
      const given = error.extensions?.code;
      const code = given === 'GRAPHQL_VALIDATION_FAILED' || given === 'GRAPHQL_PARSE_FAILED' ? given : 'BAD_USER_INPUT';
      return withCode(error, code);
    }
    logger.error({ err: error instanceof Error ? { message: error.message, stack: error.stack } : String(error) }, 'unexpected error');
    return withCode(new GraphQLError(message), 'INTERNAL_SERVER_ERROR');
  };
}

/**
 * A GraphQLError with `code` and the registry's status for it (plus `http` fields such as
 * `spec`), keeping the original's location, path and other extensions.
 */
export function withCode(error: GraphQLError, code: ErrorCode, http: Record<string, unknown> = {}): GraphQLError {
  return new GraphQLError(error.message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    originalError: error.originalError,
    extensions: { ...error.extensions, code, http: { status: ERROR_CODES[code].status, ...http } },
  });
}

/**
 * True for a validation error about an argument's or variable's value rather than the query's
 * shape (a BAD_USER_INPUT, not a GRAPHQL_VALIDATION_FAILED). graphql-js's validation rules
 * raise plain GraphQLErrors with no code, so their message text is all there is to tell by.
 */
export function isValueError(e: GraphQLError): boolean {
  return /cannot represent|Expected value of type|Expected type|argument .* is required|is not defined by type|Variable "|got invalid value/i.test(
    e.message,
  );
}

/**
 * Validation errors answer 400 whatever the Accept header (yoga answers 200 for
 * `application/json` by default), with BAD_USER_INPUT when a value was wrong and
 * GRAPHQL_VALIDATION_FAILED when the query itself was.
 */
export function useClientErrorStatus(): Plugin {
  return {
    onValidate() {
      return ({ result, setResult }) => {
        if (result.length === 0) return;
        // spec: false keeps yoga's useHTTPValidationError from answering 200 to `Accept: application/json`.
        setResult(result.map((e) => withCode(e, isValueError(e) ? 'BAD_USER_INPUT' : 'GRAPHQL_VALIDATION_FAILED', { spec: false })));
      };
    },
  };
}

/**
 * Over SSE, an error raised while a subscription is set up (a field error: it has a path)
 * travels in the stream with status 200, as graphql-sse's protocol expects: its client treats
 * any other status as a network failure and never reads the body, so PREDICTION_NOT_FOUND
 * reached it as a bare 404. Errors that ask the client to retry (`Retry-After`: 503, 429)
 * keep their status, which is what the client's retry logic reads. Request errors (parse,
 * validation, auth) have no path and keep theirs.
 */
export function useStreamFieldErrors(): Plugin {
  return {
    onResultProcess({ request, result, setResult }) {
      if (!request.headers.get('accept')?.includes('text/event-stream')) return;
      if (Array.isArray(result) || !('errors' in result) || !result.errors?.length) return;
      const inStream = (e: GraphQLError): boolean =>
        e.path !== undefined && e.extensions?.retryAfter === undefined && e.extensions?.http !== undefined;
      if (!result.errors.some(inStream)) return;
      setResult({
        ...result,
        errors: result.errors.map((e) => {
          if (!inStream(e)) return e;
          const { status: _status, ...http } = e.extensions.http as { status?: number };
          return new GraphQLError(e.message, {
            nodes: e.nodes,
            source: e.source,
            positions: e.positions,
            path: e.path,
            originalError: e.originalError,
            extensions: { ...e.extensions, http },
          });
        }),
      });
    },
  };
}
