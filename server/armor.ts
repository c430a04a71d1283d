/**
 * Request limits and malformed requests.
 *
 * Query limits come from graphql-armor, configured from `config.limits`: depth, aliases
 * (`__typename` aliases counted too), tokens, cost and directives, and no field suggestions
 * in errors. An operation over a limit answers 400 GRAPHQL_VALIDATION_FAILED with a message
 * naming the limit; it is never run. These are envelop plugins, so they apply to HTTP, SSE
 * and WebSocket alike (the WebSocket path parses and validates through `yoga.getEnveloped`).
 * Rejections are reported as validation errors rather than thrown, so a WebSocket operation
 * over a limit gets an error message instead of a closed socket. The token limit runs inside
 * the parser and can only throw: its error carries its code and status.
 *
 * A document nested so deeply that graphql-js's recursive parser or validator runs out of
 * stack (possible well under the token limit) is a 400 GRAPHQL_PARSE_FAILED, not a crash.
 *
 * Request parsing: parameters that are not JSON (GET `variables` or `extensions`, form
 * bodies) are a 400 BAD_USER_INPUT rather than yoga's unexpected-error 500. Body size: a
 * Content-Length over `http.maxBodyBytes` is refused in front of yoga (Node's parser reads no
 * more than the Content-Length says); a body without one (chunked) is counted as it streams
 * and cut off past the limit, answered with the same 413 PAYLOAD_TOO_LARGE. Only chunked
 * bodies are counted: yoga's own `maxRequestBodySize` pipes every body through a web
 * TransformStream, which doubled yoga's CPU per request here (0.32 -> 0.63 ms, measured on a
 * one-field schema).
 */
import type { ServerResponse } from 'node:http';
import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import { maxDepthRule } from '@escape.tech/graphql-armor-max-depth';
import { costLimitRule } from '@escape.tech/graphql-armor-cost-limit';
import { GraphQLError, type ValidationContext } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { BatchlineConfig } from '../core/config/settings.ts';
import { ERROR_CODES, ServingError } from '../core/errors/registry.ts';
import { withCode } from './errors.ts';

/** Most directives in one operation (graphql-armor's default). */
const MAX_DIRECTIVES = 50;

/**
 * Introspection (`__schema`) has bounds of its own: graphql-js's standard introspection query,
 * which GraphiQL and codegen tools send, nests 15 fields deep and costs about 87,500 by
 * armor's cost formula, so the general limits (8 and 5,000 by default) would refuse it; a
 * hostile one nests far deeper (34 levels answered 200 when introspection skipped the limits)
 * and costs more than 1.5^depth. Operations are held to the larger of these and the general
 * limits, on top of the general limits applied outside `__schema`.
 */
export const INTROSPECTION_MAX_DEPTH = 15;
export const INTROSPECTION_MAX_COST = 150_000;

/** Gives an armor rejection our code and status, and drops armor's "Syntax Error: " prefix. */
function relabel(err: GraphQLError): GraphQLError {
  // In place: at parse time armor throws this very error after the hook (no validation context to report to).
  const ext = err.extensions as Record<string, unknown>;
  ext.code = 'GRAPHQL_VALIDATION_FAILED';
  ext.http = { status: ERROR_CODES.GRAPHQL_VALIDATION_FAILED.status };
  err.message = err.message.replace(/^Syntax Error: /, '');
  return err;
}

/** Reported, not thrown: validation carries on and the operation is refused with every error. */
const report = {
  propagateOnRejection: false,
  onReject: [(ctx: ValidationContext | null, err: GraphQLError) => ctx?.reportError(relabel(err))],
};

/** Recognised by name: graphql may be loaded twice (ESM and CommonJS) under some runners. */
function isGraphQLError(e: unknown): e is GraphQLError {
  return e instanceof Error && e.name === 'GraphQLError';
}

function tooDeep(): GraphQLError {
  return withCode(new GraphQLError('Syntax Error: the document is nested too deeply.'), 'GRAPHQL_PARSE_FAILED');
}

/**
 * Parse and validation never crash on a document: anything but a GraphQLError thrown while
 * parsing (a stack overflow on deep nesting) is a parse failure, and a stack overflow while
 * validating is a validation error.
 */
const documentGuard: Plugin = {
  onParse({ parseFn, setParseFn }) {
    setParseFn((source, options) => {
      try {
        return parseFn(source, options);
      } catch (e) {
        if (isGraphQLError(e)) throw e;
        throw tooDeep();
      }
    });
  },
  onValidate({ validateFn, setValidationFn }) {
    setValidationFn((...args) => {
      try {
        return validateFn(...args);
      } catch (e) {
        if (e instanceof RangeError) return [tooDeep()];
        throw e;
      }
    });
  },
};

export function useArmor(limits: BatchlineConfig['limits']): Plugin {
  const armor = EnvelopArmorPlugin({
    blockFieldSuggestion: { enabled: true },
    // Depth is the nesting of fields: a fragment spread is not a level of its own.
    maxDepth: { enabled: true, n: limits.maxDepth, ignoreIntrospection: true, flattenFragments: true, ...report },
    // graphql-armor lets aliases of __typename through by default: an alias bomb of them
    // costs nothing to write and still costs the server; count them.
    maxAliases: { enabled: true, n: limits.maxAliases, allowList: [], ...report },
    costLimit: { enabled: true, maxCost: limits.maxCost, ignoreIntrospection: true, ...report },
    maxDirectives: { enabled: true, n: MAX_DIRECTIVES, ...report },
    maxTokens: {
      enabled: true,
      n: limits.maxTokens,
      propagateOnRejection: true,
      onReject: [(_ctx: ValidationContext | null, err: GraphQLError) => void relabel(err)],
    },
  }) as Plugin;
  const introspectionBounds = [
    maxDepthRule({ n: Math.max(limits.maxDepth, INTROSPECTION_MAX_DEPTH), ignoreIntrospection: false, flattenFragments: true, ...report }),
    costLimitRule({ maxCost: Math.max(limits.maxCost, INTROSPECTION_MAX_COST), ignoreIntrospection: false, ...report }),
  ];
  return {
    // The guard goes after armor's plugins, so it wraps armor's token-counting parser.
    onPluginInit({ addPlugin }) {
      addPlugin(armor);
      addPlugin({ onValidate: ({ addValidationRule }) => introspectionBounds.forEach((rule) => addValidationRule(rule)) });
      addPlugin(documentGuard);
    },
  };
}

/** The request with a body that errors (413) once more than `maxBytes` have streamed in. */
function limitBody(
  request: Request,
  maxBytes: number,
  fetchAPI: { Request: typeof Request; TransformStream: typeof TransformStream },
): Request {
  // A native ReadableStream needs the native TransformStream; the ponyfill's needs its own (graphql-yoga#4583).
  const Transform = request.body instanceof ReadableStream ? globalThis.TransformStream : fetchAPI.TransformStream;
  let bytes = 0;
  const body = request.body!.pipeThrough(
    new Transform<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        bytes += chunk.byteLength;
        // A GraphQLError: yoga's parsers pass one on as it is, where they would wrap any other.
        if (bytes > maxBytes)
          controller.error(
            new GraphQLError('request body too large', {
              extensions: { code: 'PAYLOAD_TOO_LARGE', http: { status: ERROR_CODES.PAYLOAD_TOO_LARGE.status } },
            }),
          );
        else controller.enqueue(chunk);
      },
    }),
  );
  return new fetchAPI.Request(request.url, {
    method: request.method,
    headers: request.headers,
    signal: request.signal,
    body,
    duplex: 'half',
  } as RequestInit);
}

/**
 * Errors of yoga's request parsers as client errors: 413 PAYLOAD_TOO_LARGE when a chunked
 * body runs past `maxBytes` (counted here, see limitBody), 400 BAD_USER_INPUT for parameters
 * that are not JSON. GraphQL errors the parsers raise themselves (bad JSON bodies) keep their
 * own 400.
 */
export function useRequestParseErrors(maxBytes: number): Plugin {
  // limitBody's error, by its code.
  const tooLarge = (e: unknown): boolean =>
    (e as { extensions?: { code?: unknown } } | undefined)?.extensions?.code === 'PAYLOAD_TOO_LARGE';
  return {
    onRequestParse({ request, requestParser, setRequestParser, fetchAPI, serverContext }) {
      // No parser for this content type: yoga's own 415 has an empty body and no code.
      if (!requestParser)
        throw new ServingError(
          'UNSUPPORTED_MEDIA_TYPE',
          `content type '${request.headers.get('content-type') ?? ''}' is not GraphQL; send application/json (or a GET with query parameters)`,
        );
      const parse = requestParser;
      const counted = request.headers.get('content-length') == null && request.body != null;
      setRequestParser(async (request) => {
        try {
          return await parse(counted ? limitBody(request, maxBytes, fetchAPI) : request);
        } catch (e) {
          if (tooLarge(e)) {
            // The rest of the body is never read, so the connection cannot carry another
            // request: say so and end it after the 413 (kept alive, the client's next request
            // on it once waited 6 s for a reset).
            (serverContext as { res?: ServerResponse }).res?.setHeader('connection', 'close');
            throw new ServingError('PAYLOAD_TOO_LARGE', `request body over ${maxBytes} bytes`);
          }
          if (isGraphQLError(e)) throw e;
          if (e instanceof SyntaxError || e instanceof URIError || e instanceof TypeError) {
            throw new ServingError('BAD_USER_INPUT', `request parameters: ${e.message.slice(0, 200)}`);
          }
          throw e;
        }
      });
    },
  };
}
