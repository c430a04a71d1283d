/**
 * A model's config defaults are stated once, in MODEL_DEFAULTS: the parser fills them in, and
 * the field docs, the README's table and the ModelServer CRD say the same.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { MODEL_DEFAULTS, parseModelConfig } from '../../../core/models/config.ts';
import { CHAR_NGRAM_DEFAULTS, charNgramFeatures } from '../../../core/preprocess/char-ngrams.ts';
import { documentedDefaults, leaves } from '../../support/jsdoc-defaults.ts';

const MODEL_CONFIG = new URL('../../../core/models/config.ts', import.meta.url);
const README = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
const table = leaves(MODEL_DEFAULTS);

/** Defaults that follow from the rest of the file, so the table cannot hold them. */
const DERIVED = ['task', 'scoresOutput'];

/** The defaults the README's model table states, by field. */
function readmeDefaults(): Map<string, string> {
  const section = README.slice(README.indexOf('## Model repository'), README.indexOf('\n## ', README.indexOf('## Model repository') + 1));
  const out = new Map<string, string>();
  for (const row of section.split('\n').filter((l) => /^\| `[a-zA-Z.]+` \|/.test(l))) {
    const cells = row.split('|').map((c) => c.trim().replace(/`/g, ''));
    out.set(cells[1], cells.at(-2)!);
  }
  return out;
}

describe('model config defaults', () => {
  it('are what a config.yaml that leaves them out gets', () => {
    const c = parseModelConfig(
      { outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 2] }], inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }] },
      'm',
    );
    const got = leaves({
      pool: c.pool,
      scoresKind: c.scoresKind,
      cache: c.cache,
      batching: c.batching,
      retry: c.retry,
      maxRowsPerRequest: c.maxRowsPerRequest,
    });
    expect(Object.fromEntries(got)).toEqual(Object.fromEntries(table));
    expect(c.task).toBe('raw');
    expect(c.scoresOutput).toBe('y');
  });

  it('are the @defaultValue of each field, and every documented default is in the table or derived', () => {
    const documented = documentedDefaults(MODEL_CONFIG, 'ModelConfig');
    for (const [path, value] of table) expect(documented.get(path)?.value, path).toEqual(value);
    const extra = [...documented.keys()].filter((p) => !table.has(p));
    expect(extra.sort()).toEqual([...DERIVED].sort());
  });

  it('are the README’s, row for row', () => {
    const stated = readmeDefaults();
    expect([...stated.keys()].sort()).toEqual([...table.keys()].sort());
    for (const [path, value] of table) expect(stated.get(path), path).toBe(String(value));
    // The server config's row for predict.maxRows repeats the per-model one.
    expect(README).toContain(`\`maxRowsPerRequest\` in its \`config.yaml\` (default \`${MODEL_DEFAULTS.maxRowsPerRequest}\`)`);
  });

  it('give a ModelServer’s model the same pool when the resource leaves it out', () => {
    const crd = parse(readFileSync(new URL('../../../k8s/crd/modelserver.yaml', import.meta.url), 'utf8'));
    const model = crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.models.items.properties;
    expect(model.pool.default).toBe(MODEL_DEFAULTS.pool);
  });

  it('of char-ngrams preprocessing are its @defaultValues, and what features of a block that leaves them out are made with', () => {
    const documented = documentedDefaults(new URL('../../../core/preprocess/char-ngrams.ts', import.meta.url), 'CharNgramOptions');
    expect(Object.fromEntries([...documented].map(([k, d]) => [k, d.value]))).toEqual(CHAR_NGRAM_DEFAULTS);
    const bare = charNgramFeatures('Maria', { type: 'char-ngrams', dims: 64 });
    expect(bare).toEqual(charNgramFeatures('Maria', { type: 'char-ngrams', dims: 64, ...CHAR_NGRAM_DEFAULTS }));
  });

  it('cannot be changed by a reader', () => {
    expect(Object.isFrozen(MODEL_DEFAULTS) && Object.isFrozen(MODEL_DEFAULTS.batching)).toBe(true);
  });
});
