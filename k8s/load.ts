/**
 * Reads a ModelServer file: YAML, then the CRD schema (with its defaults), then the
 * consistency checks, then sizing. Every stage reports all its problems at once.
 */
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { checkSchema } from './schema.ts';
import { checkConsistency } from './validate.ts';
import { ModelServerError, planPools, type PoolSizing } from './plan.ts';
import type { ModelServer } from './resource.ts';
import type { PoolName } from '../core/config/settings.ts';
import type { ReplicaSuggestion } from './capacity.ts';

export interface LoadedServer {
  server: ModelServer;
  pools: PoolSizing[];
  /** Replicas for the pools that state an expected rate, once simulated (k8s/capacity.ts). */
  suggestions?: Partial<Record<PoolName, ReplicaSuggestion>>;
}

/**
 * Parses, validates and sizes a ModelServer from YAML text.
 * @throws {ModelServerError} listing each problem with its field
 */
export function parseModelServer(text: string): LoadedServer {
  const docs = parseAllDocuments(text).filter((d) => d.contents !== null);
  if (docs.length !== 1) throw new ModelServerError([`expected one ModelServer document, found ${docs.length}`]);
  const doc = docs[0];
  if (doc.errors.length) throw new ModelServerError(doc.errors.map((e) => `YAML: ${e.message}`));
  const { value, errors } = checkSchema(doc.toJS());
  if (errors.length) throw new ModelServerError(errors);
  const server = value as ModelServer;
  const inconsistent = checkConsistency(server);
  if (inconsistent.length) throw new ModelServerError(inconsistent);
  return { server, pools: planPools(server) };
}

/** {@link parseModelServer} on a file. */
export function loadModelServer(file: string): LoadedServer {
  return parseModelServer(readFileSync(file, 'utf8'));
}
