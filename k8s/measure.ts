/**
 * `batchline model measure`: the resident memory one loaded, warmed-up copy of a model
 * costs, for a ModelServer's `spec.models[].memory`. Measured in a fresh child process:
 * RSS after loading and running batches of 1 and of maxBatchSize (onnxruntime's arena
 * grows to the largest batch it has seen), minus RSS before loading.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { MODEL_DEFAULTS, type TensorSpec } from '../core/models/config.ts';
import { layeredConfig, readOverrides } from '../core/models/repository.ts';

const CHILD = fileURLToPath(new URL('./measure-child.ts', import.meta.url));

export interface ModelMeasurement {
  model: string;
  version: string;
  /** RSS after warm-up minus RSS before loading: what each slot adds. */
  residentBytes: number;
  /** Highest RSS during the run minus the baseline (loading may briefly hold the file twice). */
  peakBytes: number;
  baselineBytes: number;
  batchSizes: number[];
  loadMs: number;
  warmupMs: number;
}

type Layer = Record<string, unknown>;

function readLayer(path: string): Layer | undefined {
  return existsSync(path) ? ((parse(readFileSync(path, 'utf8')) as Layer | null) ?? undefined) : undefined;
}

/** The newest version folder holding a model.onnx: numeric versions compare as numbers. */
export function latestVersion(modelDir: string): string | undefined {
  const versions = readdirSync(modelDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(modelDir, d.name, 'model.onnx')))
    .map((d) => d.name);
  return versions.sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).at(-1);
}

function run(args: string[], timeoutMs: number): Promise<string> {
  // The child is TypeScript: it runs on this same Node, which must strip types (Node 24 does).
  if (!process.features.typescript) {
    return Promise.reject(
      new Error(
        `measuring needs a Node that runs TypeScript (24+); ${process.execPath} is ${process.version}: run it through npm or node_modules/.bin/node`,
      ),
    );
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve(out);
      else reject(new Error(`measuring failed (${signal ?? `exit ${code}`}): ${err.trim().split('\n').slice(-5).join('\n')}`));
    });
  });
}

/**
 * Loads `<repositoryDir>/<model>/<version>/model.onnx` in a child process, runs warm-up
 * inferences on zeros of the inputs declared in config.yaml (batch 1 and maxBatchSize),
 * and reports the resident memory it added. The config is read as the server reads it
 * (core/models/repository.ts: the model's, the version's, then the deployment's overrides).
 *
 * @param version a version folder; the newest when absent
 * @param options.overridesFile the deployment's `models.overrides` file, if any
 * @throws Error when the model or version does not exist, or the child fails
 */
export async function measureModel(
  repositoryDir: string,
  model: string,
  version?: string,
  options: { overridesFile?: string } = {},
): Promise<ModelMeasurement> {
  const modelDir = join(repositoryDir, model);
  if (!existsSync(modelDir)) throw new Error(`model '${model}' not found in ${repositoryDir}`);
  const v = version ?? latestVersion(modelDir);
  if (v === undefined) throw new Error(`model '${model}' has no <version>/model.onnx in ${modelDir}`);
  const path = join(modelDir, v, 'model.onnx');
  if (!existsSync(path)) throw new Error(`model '${model}' version ${v}: ${path} not found`);
  const config = layeredConfig(
    readLayer(join(modelDir, 'config.yaml')),
    readLayer(join(modelDir, v, 'config.yaml')),
    readOverrides(options.overridesFile)[model],
  ) as { inputs?: TensorSpec[]; batching: { maxBatchSize?: number } };
  const inputs = config.inputs ?? null;
  const maxBatch = config.batching.maxBatchSize ?? MODEL_DEFAULTS.batching.maxBatchSize;
  const batchSizes = [...new Set([1, maxBatch])];
  const out = await run([CHILD, JSON.stringify({ path, inputs, batchSizes })], 300_000);
  const r = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as {
    baselineBytes: number;
    afterBytes: number;
    peakBytes: number;
    loadMs: number;
    warmupMs: number;
  };
  return {
    model,
    version: v,
    residentBytes: Math.max(0, r.afterBytes - r.baselineBytes),
    peakBytes: Math.max(0, r.peakBytes - r.baselineBytes),
    baselineBytes: r.baselineBytes,
    batchSizes,
    loadMs: Math.round(r.loadMs),
    warmupMs: Math.round(r.warmupMs),
  };
}
