/**
 * Hashed character n-gram features for short texts (names, words).
 *
 * The same function runs when a model is trained (scripts/) and when it serves (the
 * inference thread), so a model's features cannot drift between the two.
 */

/** Options of the `char-ngrams` preprocessing step, as written in a model's config. */
export interface CharNgramOptions {
  type: 'char-ngrams';
  /** Number of hashed feature slots; the model's input width. */
  dims: number;
  /** N-gram lengths to extract. @defaultValue [1, 2, 3] */
  ngrams?: number[];
  /** Lower-case the text first. @defaultValue true */
  lowercase?: boolean;
  /** Wrap the text in `^` and `$` so prefixes and suffixes get their own n-grams. @defaultValue true */
  boundaries?: boolean;
  /** Longest text accepted, in characters. @defaultValue 256 */
  maxLength?: number;
}

/** What a `preprocessing` block leaves out gets these (with the `@defaultValue`s above, held together by test/unit/models/config.test.ts). */
export const CHAR_NGRAM_DEFAULTS: Readonly<Required<Omit<CharNgramOptions, 'type' | 'dims'>>> = Object.freeze({
  ngrams: Object.freeze([1, 2, 3]) as number[],
  lowercase: true,
  boundaries: true,
  maxLength: 256,
});

/** FNV-1a, 32 bit: stable across processes and platforms (unlike a seeded hash). */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Writes the L2-normalised hashed n-gram counts of `text` into `out` (length `dims`). */
export function charNgramFeatures(text: string, options: CharNgramOptions, out?: Float32Array): Float32Array {
  const dims = options.dims;
  const vec = out ?? new Float32Array(dims);
  vec.fill(0);
  const lowercase = options.lowercase ?? CHAR_NGRAM_DEFAULTS.lowercase;
  const boundaries = options.boundaries ?? CHAR_NGRAM_DEFAULTS.boundaries;
  // Only an explicit `false` turns either off (a config may hold anything).
  let t = lowercase === false ? text.trim() : text.trim().toLowerCase();
  if (boundaries !== false) t = `^${t}$`;
  for (const n of options.ngrams ?? CHAR_NGRAM_DEFAULTS.ngrams) {
    for (let i = 0; i + n <= t.length; i++) {
      const gram = t.slice(i, i + n);
      vec[fnv1a(`${n}:${gram}`) % dims] += 1;
    }
  }
  let norm = 0;
  for (let i = 0; i < dims; i++) norm += vec[i] * vec[i];
  if (norm > 0) {
    const inv = 1 / Math.sqrt(norm);
    for (let i = 0; i < dims; i++) vec[i] *= inv;
  }
  return vec;
}
