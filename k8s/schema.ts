/**
 * Checks a ModelServer document against the CRD's own OpenAPI v3 schema, as the API
 * server would, and applies the schema's defaults. Unknown fields are errors, as with
 * `kubectl apply --validate=strict`. The CEL rules (`x-kubernetes-validations`) are
 * not evaluated here; `k8s/validate.ts` checks the same things with better messages.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parse } from 'yaml';

export const CRD_PATH = fileURLToPath(new URL('./crd/modelserver.yaml', import.meta.url));

type Schema = Record<string, unknown>;

/** The `openAPIV3Schema` of the CRD's single version. */
export function loadCrdSchema(path = CRD_PATH): Schema {
  const crd = parse(readFileSync(path, 'utf8')) as { spec: { versions: { schema: { openAPIV3Schema: Schema } }[] } };
  return crd.spec.versions[0].schema.openAPIV3Schema;
}

/**
 * Structural schemas may not say `additionalProperties: false` beside `properties`; the
 * API server prunes (or, strictly, rejects) unknown fields instead. This copy says it,
 * so ajv rejects them too.
 */
function strict(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(strict);
  if (typeof schema !== 'object' || schema === null) return schema;
  const out: Schema = {};
  for (const [k, v] of Object.entries(schema)) out[k] = k === 'default' || k === 'enum' ? v : strict(v);
  if (out.properties && out.additionalProperties === undefined && !out['x-kubernetes-preserve-unknown-fields']) {
    out.additionalProperties = false;
  }
  return out;
}

let compiled: ValidateFunction | undefined;

function validator(): ValidateFunction {
  if (compiled) return compiled;
  const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true });
  for (const keyword of [
    'x-kubernetes-int-or-string',
    'x-kubernetes-preserve-unknown-fields',
    'x-kubernetes-list-type',
    'x-kubernetes-list-map-keys',
    'x-kubernetes-validations',
  ]) {
    ajv.addKeyword({ keyword });
  }
  compiled = ajv.compile(strict(loadCrdSchema()) as Schema);
  return compiled;
}

/** `/spec/models/0/memory` → `spec.models[0].memory`. */
export function fieldPath(pointer: string): string {
  return pointer
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, part) => (/^\d+$/.test(part) ? `${acc}[${part}]` : acc ? `${acc}.${part}` : part), '');
}

function describe(e: ErrorObject): string {
  const at = fieldPath(e.instancePath);
  const join = (field: string) => (at ? `${at}.${field}` : field);
  switch (e.keyword) {
    case 'required':
      return `${join(String(e.params.missingProperty))}: required`;
    case 'additionalProperties':
      return `${join(String(e.params.additionalProperty))}: unknown field`;
    case 'enum':
      return `${at}: must be one of ${(e.params.allowedValues as unknown[]).join(', ')}`;
    case 'anyOf':
      return `${at}: must be a number or a quantity string`;
    case 'pattern':
      return `${at}: '${String(e.data)}' is not a Kubernetes quantity`;
    default:
      return `${at}: ${e.message}`;
  }
}

/**
 * Validates a parsed document against the CRD schema and returns a copy with defaults
 * applied, plus one message per problem (each naming the field). Empty `errors` means valid.
 */
export function checkSchema(doc: unknown): { value: unknown; errors: string[] } {
  const value = structuredClone(doc);
  const validate = validator();
  if (validate(value)) return { value, errors: [] };
  // An int-or-string that is neither fails both branches and the anyOf; one message is enough.
  const errors = (validate.errors ?? []).filter((e) => !e.schemaPath.includes('/anyOf/')).map(describe);
  return { value, errors: [...new Set(errors)] };
}
