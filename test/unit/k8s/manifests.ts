/**
 * Test helpers: load and render a ModelServer, and validate each manifest against the
 * Kubernetes (kubernetes-models) and KEDA (@kubernetes-models/keda) schemas.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';
import { TriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication';
import { parseModelServer, type LoadedServer } from '../../../k8s/load.ts';
import { renderManifests, toYaml } from '../../../k8s/render.ts';

export const EXAMPLES_DIR = fileURLToPath(new URL('../../../k8s/examples/', import.meta.url));
export const GOLDEN_DIR = fileURLToPath(new URL('./golden/', import.meta.url));

export function exampleText(name: string): string {
  return readFileSync(`${EXAMPLES_DIR}${name}`, 'utf8');
}

export function exampleDoc(name: string): Record<string, unknown> & { spec: Record<string, unknown> } {
  return parse(exampleText(name)) as Record<string, unknown> & { spec: Record<string, unknown> };
}

export function load(doc: unknown): LoadedServer {
  return parseModelServer(typeof doc === 'string' ? doc : JSON.stringify(doc));
}

export function renderYaml(doc: unknown): string {
  return toYaml(renderManifests(load(doc)));
}

export type Obj = Record<string, unknown> & { kind: string; metadata: { name: string; annotations?: Record<string, string> } };

/** The rendered YAML parsed back, document by document. */
export function documents(yaml: string): Obj[] {
  return parseAllDocuments(yaml).map((d) => d.toJS() as Obj);
}

const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'keda.sh/v1alpha1/ScaledObject': ScaledObject,
  'keda.sh/v1alpha1/TriggerAuthentication': TriggerAuthentication,
};

/** Validates one manifest against its schema; throws with the schema's message. */
export function validateManifest(m: Obj): void {
  const Model = MODELS[`${String(m.apiVersion)}/${m.kind}`];
  if (!Model) throw new Error(`no schema for ${String(m.apiVersion)} ${m.kind}`);
  new Model(m as never).validate();
}

/**
 * Sets (or, with `undefined`, deletes) a path in a parsed document: `set(doc, 'spec.models.1.pool', 'gpu')`;
 * an array path for keys holding dots.
 */
export function set(doc: unknown, path: string | string[], value: unknown): void {
  const keys = typeof path === 'string' ? path.split('.') : [...path];
  const last = keys.pop() as string;
  let node = doc as Record<string, unknown>;
  for (const k of keys) node = (node[k] ??= {}) as Record<string, unknown>;
  if (value === undefined) delete node[last];
  else node[last] = value;
}
