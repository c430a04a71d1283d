/**
 * yoga's caches of parsed documents (and of parse errors), bounded by bytes rather than by
 * count. yoga's default keeps the last 1,024 documents whatever their size: 1,000 distinct
 * 900 KB queries held about 1.2 GB for good. Here a document's cost is estimated from its
 * source length (the source string is the key, the AST is a few times its size), the caches
 * hold at most `maxBytes` of that estimate, and documents over `maxDocumentBytes` are not
 * cached at all: no client repeats a query that large (inputs that size belong in variables),
 * so caching it only buys memory. Validation results are kept by yoga in a WeakMap keyed by
 * the cached document, so they leave with it.
 */
import { LRUCache } from 'lru-cache';
import type { YogaServerOptions } from 'graphql-yoga';

type CacheOptions = Exclude<NonNullable<YogaServerOptions<object, object>['parserAndValidationCache']>, boolean>;

/** Estimated bytes an entry holds per character of its source (key and AST together). */
export const BYTES_PER_SOURCE_CHAR = 8;

export interface ParseCacheLimits {
  /** Total estimated bytes held by each cache. @defaultValue 32 MiB */
  maxBytes?: number;
  /** Larger documents are parsed every time. @defaultValue 64 KiB */
  maxDocumentBytes?: number;
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
      if (key.length <= maxDocumentBytes) lru.set(key, value);
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
