/**
 * API keys. Keys come from configuration (`auth.keys`, usually the BATCHLINE_API_KEYS
 * Secret) as `name:sha256hex:scope[,scope...]` entries separated by `;`; only hashes are
 * held. A presented key is hashed and compared with every configured hash in constant time.
 * The principal (key name and scopes) goes into the GraphQL context; resolvers call
 * `authorize` (core/api/authorization.ts, the policy) for what needs a scope. Keys are never logged, and never put in an error.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Plugin } from 'graphql-yoga';
import { CloseCode } from 'graphql-ws';
import type { BatchlineConfig } from '../core/config/settings.ts';
import { ServingError } from '../core/errors/registry.ts';
import { toGraphQLError } from './errors.ts';
import { ANONYMOUS, type Principal } from '../core/api/authorization.ts';

interface KeyEntry {
  name: string;
  hash: Buffer;
  principal: Principal;
}

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const HASH = /^[0-9a-fA-F]{64}$/;
const SCOPE = /^(admin|predict:\*|predict:[A-Za-z0-9_.-]{1,128})$/;

/** The sha256 hex of a key: what `auth.keys` holds (`batchline auth hash-key <key>`). */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/**
 * Parses `auth.keys`. Throws, naming the entry (by position and name, never its hash),
 * on anything malformed: a bad name, a hash that is not 64 hex digits, an unknown scope, a
 * name or hash given twice.
 */
export function parseApiKeys(spec: string): KeyEntry[] {
  const entries: KeyEntry[] = [];
  const parts = spec
    .split(';')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  parts.forEach((part, i) => {
    const at = `auth.keys entry ${i + 1}`;
    const fields = part.split(':');
    // A `predict:<model>` scope holds a colon itself: name and hash are the first two fields.
    if (fields.length < 3) throw new Error(`config: ${at} must be name:sha256hex:scope[,scope...]`);
    const [name, hash] = fields;
    const scopesText = fields.slice(2).join(':');
    if (!NAME.test(name)) throw new Error(`config: ${at}: the name must be 1-64 of A-Z a-z 0-9 _ . -`);
    if (!HASH.test(hash))
      throw new Error(`config: ${at} ('${name}'): the key hash must be 64 hex digits (sha256; see 'batchline auth hash-key')`);
    const scopes = scopesText.split(',').map((s) => s.trim());
    for (const scope of scopes) {
      if (!SCOPE.test(scope))
        throw new Error(`config: ${at} ('${name}'): unknown scope '${scope.slice(0, 80)}' (predict:*, predict:<model>, admin)`);
    }
    if (entries.some((e) => e.name === name)) throw new Error(`config: ${at}: the name '${name}' is given twice`);
    const digest = Buffer.from(hash.toLowerCase(), 'hex');
    if (entries.some((e) => e.hash.equals(digest))) throw new Error(`config: ${at} ('${name}'): the same key hash is given twice`);
    entries.push({ name, hash: digest, principal: Object.freeze({ name, scopes: Object.freeze([...new Set(scopes)]) }) });
  });
  return entries;
}

export interface Authenticator {
  readonly enabled: boolean;
  /**
   * The principal of a presented key: ANONYMOUS when auth is off, undefined for a missing
   * or unknown key.
   */
  authenticate(key: string | undefined): Principal | undefined;
  /** The key in request headers: the configured header, else `Authorization: Bearer <key>`. */
  keyFromHeaders(headers: Headers | IncomingHttpHeaders | undefined): string | undefined;
  /** The key in a graphql-ws `connection_init` payload: `{ apiKey }` or `{ headers: { ... } }`. */
  keyFromConnectionParams(params: Readonly<Record<string, unknown>> | undefined): string | undefined;
}

function headerValue(headers: Headers | IncomingHttpHeaders | Record<string, unknown> | undefined, name: string): string | undefined {
  if (!headers) return undefined;
  // Fetch Headers, yoga's ponyfill included (not always `instanceof Headers`).
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  headers = headers as IncomingHttpHeaders | Record<string, unknown>;
  // Plain objects (IncomingMessage headers are lower-case; connection params may be any case).
  let raw = headers[name];
  if (raw === undefined) {
    const found = Object.keys(headers).find((k) => k.toLowerCase() === name);
    raw = found === undefined ? undefined : headers[found];
  }
  const value = Array.isArray(raw) ? raw[0] : raw;
  return typeof value === 'string' ? value : undefined;
}

/** Reads the configuration once; a malformed `auth.keys` stops the server at startup. */
export function createAuthenticator(config: BatchlineConfig['auth']): Authenticator {
  const header = config.header.trim().toLowerCase() || 'x-api-key';
  if (!/^[a-z0-9-]{1,64}$/.test(header)) throw new Error(`config: 'auth.header' must be an HTTP header name, got '${config.header}'`);
  // Parsed even when auth is off, so a broken Secret is found before it is switched on.
  const entries = parseApiKeys(config.keys);
  if (config.enabled && entries.length === 0)
    throw new Error(`config: 'auth.enabled' is true but 'auth.keys' (BATCHLINE_API_KEYS) holds no key`);

  const pick = (value: string | undefined): string | undefined => {
    const v = value?.trim();
    return v ? v : undefined;
  };
  const fromBearer = (value: string | undefined): string | undefined => {
    const m = value ? /^Bearer\s+(\S+)\s*$/i.exec(value) : null;
    return m ? m[1] : undefined;
  };

  return {
    enabled: config.enabled,
    authenticate(key) {
      if (!config.enabled) return ANONYMOUS;
      if (!key || key.length > 1024) return undefined;
      const digest = createHash('sha256').update(key, 'utf8').digest();
      let found: Principal | undefined;
      // Every entry is compared, so the time taken does not tell which one matched.
      for (const e of entries) {
        if (timingSafeEqual(digest, e.hash) && !found) found = e.principal;
      }
      return found;
    },
    keyFromHeaders(headers) {
      return pick(headerValue(headers, header)) ?? fromBearer(headerValue(headers, 'authorization'));
    },
    keyFromConnectionParams(params) {
      if (!params) return undefined;
      if (typeof params.apiKey === 'string') return pick(params.apiKey);
      const h = params.headers;
      if (h && typeof h === 'object' && !Array.isArray(h)) {
        const headers = h as Record<string, unknown>;
        return pick(headerValue(headers, header)) ?? fromBearer(headerValue(headers, 'authorization'));
      }
      return undefined;
    },
  };
}

/** The server context fields auth adds: the principal, once authenticated. */
export type AuthServerContext = { principal?: Principal };

/**
 * Authenticates every GraphQL request over HTTP and SSE, before it is parsed or run: a
 * missing or unknown key answers 401 UNAUTHENTICATED (introspection included). /health,
 * /ready, /metrics and the GraphiQL page are answered before this hook and stay open.
 */
export function useApiKeyAuth(auth: Authenticator): Plugin<Record<string, unknown>, AuthServerContext> {
  return {
    onParams({ request, context, setResult }) {
      const principal = auth.authenticate(auth.enabled ? auth.keyFromHeaders(request.headers) : undefined);
      if (principal) {
        (context as AuthServerContext).principal = principal;
        return;
      }
      setResult({ errors: [toGraphQLError(new ServingError('UNAUTHENTICATED'))] });
    },
  };
}

/**
 * graphql-ws `onConnect`: the key from the upgrade request's headers or from the
 * `connection_init` payload; a missing or unknown key closes the socket with graphql-ws's
 * CloseCode.Unauthorized (4401).
 * The principal is kept on `extra` for every operation of the connection.
 */
export function wsAuthenticate(
  auth: Authenticator,
  ctx: {
    connectionParams?: Readonly<Record<string, unknown>>;
    extra: { request: { headers: IncomingHttpHeaders }; socket: { close(code: number, reason: string): void } } & AuthServerContext;
  },
): boolean {
  const key = auth.enabled
    ? (auth.keyFromConnectionParams(ctx.connectionParams) ?? auth.keyFromHeaders(ctx.extra.request.headers))
    : undefined;
  const principal = auth.authenticate(key);
  if (!principal) {
    ctx.extra.socket.close(CloseCode.Unauthorized, 'Unauthorized');
    return false;
  }
  ctx.extra.principal = principal;
  return true;
}
