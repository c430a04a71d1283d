/**
 * The model repository: a folder laid out `<model>/<version>/model.onnx` with a
 * `<model>/config.yaml` (and optional per-version overrides). Scanning it checks each config
 * against the ONNX graph's own metadata; a model that fails to load or disagrees is kept as
 * FAILED with the reason (shown in the `models` query and logged), never served, never fatal.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse } from 'yaml';
import { ORT_TYPE, parseModelConfig, type ModelConfig, type TensorSpec } from './config.ts';
import type { BatchlineConfig } from '../config/settings.ts';
import type { Logger } from '../telemetry/logger.ts';
import { readPolicySpec, type ModelPolicySpec } from './rollout-policy.ts';

export interface ModelVersion {
  name: string;
  version: string;
  path: string;
  config: ModelConfig;
  status: 'READY' | 'FAILED';
  /** Why a FAILED version was skipped. */
  error?: string;
  /** Contents of `<version>/metrics.json`, when the build recorded one. */
  metrics?: Record<string, unknown>;
  sizeBytes: number;
}

type Raw = Record<string, unknown>;

/**
 * A version's config as the server reads it, from its layers in order: `<model>/config.yaml`,
 * `<model>/<version>/config.yaml`, then the deployment's entry for the model in
 * `models.overrides`. A later layer wins field by field; `batching` is merged key by key.
 * `batchline model measure` reads a version through this too.
 */
export function layeredConfig(...layers: (Raw | undefined)[]): Raw {
  const batching = Object.assign({}, ...layers.map((l) => l?.batching as Raw | undefined)) as Raw;
  return { ...Object.assign({}, ...layers), batching };
}

/** The deployment's per-model overrides (`models.overrides`, a YAML map of model name to fields); empty when unset. */
export function readOverrides(file: string | undefined): Record<string, Raw | undefined> {
  return ((file ? readYaml(file) : undefined) ?? {}) as Record<string, Raw | undefined>;
}

function fail(msg: string): never {
  throw new Error(msg);
}

function readYaml(path: string): Raw | undefined {
  if (!existsSync(path)) return undefined;
  return parse(readFileSync(path, 'utf8')) as Raw;
}

/** Checks the config's tensors against the session's metadata; returns the disagreement, if any. */
export async function verifyAgainstGraph(path: string, config: ModelConfig): Promise<void> {
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(path, { intraOpNumThreads: 1, graphOptimizationLevel: 'disabled' });
  try {
    const check = (kind: 'input' | 'output', specs: TensorSpec[], names: readonly string[], meta: readonly unknown[]): void => {
      const declared = specs.map((s) => s.name).sort();
      const actual = [...names].sort();
      if (declared.join(',') !== actual.join(',')) fail(`config ${kind}s [${declared}] but the graph has [${actual}]`);
      for (const spec of specs) {
        const m = (meta as { name: string; isTensor: boolean; type?: string; shape?: ReadonlyArray<number | string> }[]).find(
          (x) => x.name === spec.name,
        );
        if (!m || !m.isTensor) continue;
        if (m.type && m.type !== ORT_TYPE[spec.datatype])
          fail(`${kind} '${spec.name}' is ${m.type} in the graph, config says ${spec.datatype}`);
        const shape = m.shape ?? [];
        if (shape.length === 0) continue;
        if (shape.length !== spec.shape.length)
          fail(`${kind} '${spec.name}' has rank ${shape.length} in the graph, config says ${spec.shape.length}`);
        shape.forEach((d, i) => {
          const c = spec.shape[i];
          if (typeof d === 'number' && d > 0 && c !== -1 && c !== d)
            fail(`${kind} '${spec.name}' dimension ${i} is ${d} in the graph, config says ${c}`);
          if (i === 0 && typeof d === 'number' && d > 0)
            fail(`${kind} '${spec.name}' has a fixed batch dimension ${d}; it must be dynamic`);
        });
      }
    };
    check('input', config.inputs, session.inputNames, session.inputMetadata ?? []);
    check('output', config.outputs, session.outputNames, session.outputMetadata ?? []);
  } finally {
    await session.release();
  }
}

function compareVersions(a: string, b: string): number {
  const na = Number(a);
  const nb = Number(b);
  if (Number.isFinite(na) && Number.isFinite(nb)) return na - nb;
  return a.localeCompare(b);
}

/**
 * A digest of what defines the served models: the layout, each model.onnx's size, and the
 * contents of config.yaml and metrics.json. No modification times, so every replica of an
 * image computes the same value. A new version is a new folder; files are not edited in place.
 */
export function repositoryFingerprint(dir: string): string {
  const root = resolve(dir);
  const hash = createHash('sha256');
  if (!existsSync(root)) return hash.digest('hex');
  const walk = (d: string, depth: number): void => {
    for (const name of readdirSync(d).sort()) {
      if (name.startsWith('.')) continue;
      const p = join(d, name);
      const s = statSync(p);
      if (s.isDirectory()) {
        if (depth < 2) walk(p, depth + 1);
      } else if (name === 'model.onnx') {
        hash.update(`${p.slice(root.length)}:${s.size}\n`);
      } else if (name === 'config.yaml' || name === 'metrics.json') {
        hash
          .update(`${p.slice(root.length)}:`)
          .update(readFileSync(p))
          .update('\n');
      }
    }
  };
  walk(root, 0);
  return hash.digest('hex');
}

/** What the repository knows after a scan. Read-only; a new scan makes a new one. */
export class ModelRepository {
  readonly dir: string;
  readonly versions: ModelVersion[];
  /** The repository's fingerprint when this scan began. */
  readonly fingerprint: string;
  /** Each model's `rollout:` and `capture:` (core/models/rollout-policy.ts), by name; absent for a model whose sections failed. */
  readonly policies: ReadonlyMap<string, ModelPolicySpec>;

  constructor(dir: string, versions: ModelVersion[], fingerprint = '', policies: ReadonlyMap<string, ModelPolicySpec> = new Map()) {
    this.dir = dir;
    this.versions = versions;
    this.fingerprint = fingerprint;
    this.policies = policies;
  }

  /** Scans `dir`, verifying every version against its graph. Never throws for a bad model. */
  static async scan(
    dir: string,
    options: { verify?: boolean; onSkip?: (v: ModelVersion) => void; overridesFile?: string } = {},
  ): Promise<ModelRepository> {
    const root = resolve(dir);
    const overrides = readOverrides(options.overridesFile);
    const fingerprint = repositoryFingerprint(root);
    const found: ModelVersion[] = [];
    const policies = new Map<string, ModelPolicySpec>();
    if (!existsSync(root)) return new ModelRepository(root, found, fingerprint, policies);
    for (const name of readdirSync(root).sort()) {
      const modelDir = join(root, name);
      if (!statSync(modelDir).isDirectory() || name.startsWith('.')) continue;
      let base: Raw | undefined;
      let baseError: string | undefined;
      try {
        base = readYaml(join(modelDir, 'config.yaml'));
      } catch (e) {
        baseError = `config.yaml: ${(e as Error).message}`;
      }
      // The traffic policy is the model's, not a version's: read once, and a fault in it fails
      // every version (serving the newest to everyone instead would be what the policy prevents).
      try {
        if (!baseError) policies.set(name, readPolicySpec(base, overrides[name] as Raw | undefined));
      } catch (e) {
        baseError = `config.yaml: ${(e as Error).message}`;
      }
      const versionDirs = readdirSync(modelDir)
        .filter((v) => existsSync(join(modelDir, v, 'model.onnx')))
        .sort(compareVersions);
      for (const version of versionDirs) {
        const path = join(modelDir, version, 'model.onnx');
        const mv: ModelVersion = {
          name,
          version,
          path,
          status: 'FAILED',
          config: undefined as unknown as ModelConfig,
          sizeBytes: statSync(path).size,
        };
        try {
          if (baseError) fail(baseError);
          const override = readYaml(join(modelDir, version, 'config.yaml'));
          if (!base && !override) fail(`no config.yaml for model '${name}'`);
          for (const k of ['rollout', 'capture'])
            if (override?.[k] !== undefined) fail(`${version}/config.yaml: '${k}' belongs in the model's config.yaml, not a version's`);
          mv.config = parseModelConfig(layeredConfig(base, override, overrides[name]), name);
          mv.config.name = name;
          if (options.verify !== false) await verifyAgainstGraph(path, mv.config);
          const metricsPath = join(modelDir, version, 'metrics.json');
          if (existsSync(metricsPath)) mv.metrics = JSON.parse(readFileSync(metricsPath, 'utf8')) as Record<string, unknown>;
          mv.status = 'READY';
        } catch (e) {
          mv.error = (e as Error).message;
          options.onSkip?.(mv);
        }
        found.push(mv);
      }
    }
    return new ModelRepository(root, found, fingerprint, policies);
  }

  ready(): ModelVersion[] {
    return this.versions.filter((v) => v.status === 'READY');
  }

  /** The version asked for, or the newest ready one. Undefined when the model or version is unknown. */
  find(name: string, version?: string | null): ModelVersion | undefined {
    const candidates = this.versions.filter((v) => v.name === name);
    if (version) return candidates.find((v) => v.version === version);
    const ready = candidates.filter((v) => v.status === 'READY');
    return ready[ready.length - 1] ?? candidates[candidates.length - 1];
  }

  has(name: string): boolean {
    return this.versions.some((v) => v.name === name);
  }
}

/** Scans the configured repository (with its deployment overrides), logging each version skipped and why. */
export function scanConfigured(config: BatchlineConfig, log: Logger): Promise<ModelRepository> {
  return ModelRepository.scan(config.models.repository, {
    overridesFile: config.models.overrides || undefined,
    onSkip: (v) => log.error({ model: v.name, version: v.version, reason: v.error }, 'model skipped'),
  });
}
