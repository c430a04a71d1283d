/** The cache key is a hash of the input's bytes: equal inputs share it, different ones never do. */
import { describe, expect, it } from 'vitest';
import { cacheKey } from '../../../core/api/prediction-cache.ts';
import type { NormalizedInput } from '../../../core/prediction/input.ts';

const tensor = (data: ArrayLike<number>, shape = [1, data.length]): NormalizedInput => ({
  kind: 'tensors',
  tensors: [{ name: 'x', datatype: 'FP32', shape, data }],
});

describe('cacheKey', () => {
  it('is the same for the same texts and tensors, whatever array holds the values', () => {
    expect(cacheKey('m', '1', { kind: 'text', texts: ['Maria'] })).toBe(cacheKey('m', '1', { kind: 'text', texts: ['Maria'] }));
    expect(cacheKey('m', '1', tensor(Float32Array.of(1, 2, 3, 4)))).toBe(cacheKey('m', '1', tensor(Float32Array.of(1, 2, 3, 4))));
    expect(cacheKey('m', '1', tensor([0.5, 1]))).toBe(cacheKey('m', '1', tensor([0.5, 1])));
  });

  it('differs for different values, shapes, text boundaries, models and versions', () => {
    const keys = [
      cacheKey('m', '1', tensor(Float32Array.of(1, 2, 3, 4))),
      cacheKey('m', '1', tensor(Float32Array.of(1, 2, 3, 5))),
      cacheKey('m', '1', tensor(Float32Array.of(1, 2, 3, 4), [2, 2])),
      cacheKey('m', '2', tensor(Float32Array.of(1, 2, 3, 4))),
      cacheKey('n', '1', tensor(Float32Array.of(1, 2, 3, 4))),
      cacheKey('m', '1', { kind: 'text', texts: ['ab', 'c'] }),
      cacheKey('m', '1', { kind: 'text', texts: ['a', 'bc'] }),
    ];
    expect(new Set(keys).size).toBe(keys.length);
  });

  it('hashes the bytes, not a JSON rendering of a typed array (an object of indices)', () => {
    // 512 values: the key stays short and does not grow with the input.
    const key = cacheKey('m', '1', tensor(new Float32Array(512).fill(0.25)));
    expect(key.length).toBeLessThan(80);
  });
});
