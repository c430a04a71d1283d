/**
 * Who may do what: the principal a request runs as and the scopes it needs. How a principal
 * is established (API keys over HTTP headers or a graphql-ws connection payload) is the
 * transport's business (server/auth.ts); what it may do once known is decided here.
 */
import { ServingError } from '../errors/registry.ts';

/** Who is asking: a configured key, or the anonymous all-access principal when auth is off. */
export interface Principal {
  /** The key's name (never the key). */
  name: string;
  /** `predict:*`, `predict:<model>`, `admin`. */
  scopes: readonly string[];
  /** True only when auth is off. */
  anonymous?: boolean;
}

export const ANONYMOUS: Principal = Object.freeze({ name: 'anonymous', scopes: Object.freeze(['predict:*', 'admin']), anonymous: true });

/**
 * Throws FORBIDDEN unless the context's principal may use `model` (`predict:<model>` or
 * `predict:*`) and, with `admin`, holds the `admin` scope. A context without a principal
 * is UNAUTHENTICATED.
 */
export function authorize(ctx: { principal?: Principal }, need: { model?: string; admin?: boolean }): void {
  const p = ctx.principal;
  if (!p) throw new ServingError('UNAUTHENTICATED');
  if (need.admin && !p.scopes.includes('admin')) throw new ServingError('FORBIDDEN', `API key '${p.name}' may not run admin operations`);
  if (need.model !== undefined && !mayPredict(p, need.model))
    throw new ServingError('FORBIDDEN', `API key '${p.name}' may not use model '${need.model}'`);
}

/** True when the principal may use `model`, or any model when `model` is undefined. */
export function mayPredict(p: Principal | undefined, model?: string): boolean {
  if (!p) return false;
  if (p.scopes.includes('predict:*')) return true;
  return model !== undefined && p.scopes.includes(`predict:${model}`);
}
