/**
 * yoga's caches of parsed documents (and of parse errors), bounded by bytes rather than by
 * count. yoga's default keeps the last 1,024 documents whatever their size: 1,000 distinct
 * 900 KB queries held about 1.2 GB for good. Here a document's cost is estimated from its
 * source length (the source string is the key, the AST is a few times its size), the caches
 * hold at most `maxBytes` of that estimate, and documents over `maxDocumentBytes` are not
 * cached at all: no client repeats a query that large (inputs that size belong in variables),
 * so caching it only buys memory. Validation results are kept by yoga in a WeakMap keyed by
 * the cached document, so they leave with it.
 *
 * A cached error (a parse error here, validation errors in yoga's WeakMap) keeps its stack
 * trace, and V8 keeps a stack unformatted until it is read: its frames hold their receivers
 * and closures alive, and through them the request that failed first (its node request and
 * response, its socket, its body, the parser with every token of the document). Three seeded
 * fuzz runs of 12,000 requests left ~3,900 such errors holding ~320 requests' worth of
 * objects. `compactError` formats the stack before an error is kept (a string of a few hundred
 * bytes, no frames), and `useCompactValidationErrors` does it for validation results.
 */
import { LRUCache } from 'lru-cache';
import type { Plugin, YogaServerOptions } from 'graphql-yoga';

type CacheOptions = Exclude<NonNullable<YogaServerOptions<object, object>['parserAndValidationCache']>, boolean>;

/** Estimated bytes an entry holds per character of its source (key and AST together). */
export const BYTES_PER_SOURCE_CHAR = 8;

export interface ParseCacheLimits {
  /** Total estimated bytes held by each cache. @defaultValue 32 MiB */
  maxBytes?: number;
  /** Larger documents are parsed every time. @defaultValue 64 KiB */
  maxDocumentBytes?: number;
}

/**
 * Drops an error's stack frames (and all they hold) by formatting them once: V8 then keeps the
 * string only. Returns the error.
 */
export function compactError<T>(error: T): T {
  if (error instanceof Error) void error.stack;
  return error;
}

/** Validation errors are cached by yoga with their document: their stacks are formatted first. */
export function useCompactValidationErrors(): Plugin {
  return {
    onValidate:
      () =>
      ({ result }) => {
        if (Array.isArray(result)) for (const e of result as unknown[]) compactError(e);
      },
  };
}

/** A cache with yoga's get/set shape over a byte-bounded LRU. */
function boundedCache<T extends object>(
  maxBytes: number,
  maxDocumentBytes: number,
): { get(key: string): T | undefined; set(key: string, value: T): void; readonly bytes: number } {
  const lru = new LRUCache<string, T>({
    max: 1024,
    maxSize: maxBytes,
    sizeCalculation: (_v, key) => Math.max(1, key.length * BYTES_PER_SOURCE_CHAR),
  });
  return {
    get: (key) => lru.get(key),
    set: (key, value) => {
      if (key.length <= maxDocumentBytes) lru.set(key, compactError(value));
    },
    get bytes() {
      return lru.calculatedSize;
    },
  };
}

export function parseCache(limits: ParseCacheLimits = {}): CacheOptions & { bytes(): number } {
  const maxBytes = limits.maxBytes ?? 32 * 1024 * 1024;
  const maxDocumentBytes = limits.maxDocumentBytes ?? 64 * 1024;
  const documentCache = boundedCache<NonNullable<ReturnType<NonNullable<CacheOptions['documentCache']>['get']>>>(
    maxBytes,
    maxDocumentBytes,
  );
  const errorCache = boundedCache<object>(maxBytes, maxDocumentBytes);
  return { documentCache, errorCache, validationCache: true, bytes: () => documentCache.bytes + errorCache.bytes };
}
