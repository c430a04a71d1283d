/**
 * LRU cache of results in front of inference, keyed on model, version and the canonical
 * input. Bounded by entries and bytes, with a TTL. Concurrent identical requests share one
 * inference (lru-cache's fetch coalesces); failures are never stored.
 */
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { NormalizedInput } from '../prediction/input.ts';
import { modelKey, type PredictionResult } from '../prediction/record.ts';

export interface CacheOptions {
  maxEntries: number;
  maxBytes: number;
  ttlMs: number;
}

interface Entry {
  result: PredictionResult;
  size: number;
}

/**
 * The key of an input: sha256 over its bytes as the model will see them. Texts go in with
 * their lengths (so ['ab', 'c'] and ['a', 'bc'] differ); tensors with name, datatype and
 * shape, then their values' bytes (a typed array's own, a plain list's as float64).
 * JSON.stringify of the input, as before, turned a Float32Array into an object of indices:
 * about 20x the bytes to build and hash.
 */
export function cacheKey(model: string, version: string, input: NormalizedInput): string {
  const h = createHash('sha256');
  if (input.kind === 'text') {
    for (const t of input.texts) h.update(`${t.length}:`).update(t);
  } else {
    for (const t of input.tensors) {
      h.update(`${t.name}|${t.datatype}|${t.shape.join('x')}|`);
      const d = t.data;
      h.update(ArrayBuffer.isView(d) ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : new Uint8Array(Float64Array.from(d).buffer));
    }
  }
  return `${modelKey(model, version)}:${input.kind}:${h.digest('base64url')}`;
}

export class PredictionCache {
  private readonly lru: LRUCache<string, Entry, () => Promise<PredictionResult>>;

  constructor(options: CacheOptions) {
    this.lru = new LRUCache<string, Entry, () => Promise<PredictionResult>>({
      max: Math.max(1, options.maxEntries),
      maxSize: Math.max(1, options.maxBytes),
      sizeCalculation: (e) => Math.max(1, e.size),
      ttl: options.ttlMs,
      fetchMethod: async (_key, _stale, { context }) => {
        const result = await context();
        return { result, size: JSON.stringify(result).length };
      },
    });
  }

  /**
   * Returns the cached result for `key`, or runs `compute` (once, however many callers ask
   * at the same time). `cached` is true when this caller did not start the inference.
   */
  async getOrCompute(
    key: string,
    compute: () => Promise<PredictionResult>,
    ttlMs?: number,
  ): Promise<{ result: PredictionResult; cached: boolean }> {
    const status: LRUCache.Status<string, Entry, () => Promise<PredictionResult>> = {};
    const entry = await this.lru.fetch(key, { context: compute, status, ttl: ttlMs });
    if (!entry) throw new Error('cache fetch returned nothing');
    return { result: entry.result, cached: status.fetch === 'hit' || status.fetch === 'inflight' };
  }

  peek(key: string): PredictionResult | undefined {
    return this.lru.get(key)?.result;
  }

  /** Drops expired entries now (lru-cache only notices expiry on access). */
  purgeStale(): number {
    let n = 0;
    for (const key of this.lru.keys()) if (this.lru.getRemainingTTL(key) <= 0 && this.lru.delete(key)) n++;
    return n;
  }

  get size(): number {
    return this.lru.size;
  }
}
