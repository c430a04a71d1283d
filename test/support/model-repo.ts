/** A fresh model repository in a temp folder, with models written by onnx-proto. */
import { cpSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { encodeDenseModel } from '../../scripts/models/onnx-writer.ts';
import { REPO_MODELS } from '../../harness/stack.ts';

/** Weights of a 4 -> 3 linear model, fixed so tests can recompute its outputs. */
export const LINEAR_WEIGHT = Float32Array.from({ length: 12 }, (_, i) => (i - 6) / 4);
export const LINEAR_BIAS = Float32Array.from([0.5, -1, 2]);

export function linearOnnx(): Uint8Array {
  return encodeDenseModel({
    graphName: 'linear',
    inputName: 'x',
    outputName: 'y',
    softmax: false,
    layers: [{ inFeatures: 4, outFeatures: 3, weight: LINEAR_WEIGHT, bias: LINEAR_BIAS, activation: 'none' }],
  });
}

export function addModel(root: string, name: string, version: string, onnx: Uint8Array | string, config: Record<string, unknown>): string {
  const dir = join(root, name, version);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'model.onnx'), onnx);
  writeFileSync(join(root, name, 'config.yaml'), stringify(config));
  return join(dir, 'model.onnx');
}

export const LINEAR_CONFIG = {
  pool: 'cpu',
  task: 'raw',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 3] }],
  cache: { enabled: false },
  retry: { attempts: 1, backoffMs: 0 },
};

export function tempRepository(): string {
  return mkdtempSync(join(tmpdir(), 'batchline-models-'));
}

/**
 * The error tests' repository: name-gender and mlp-bench from the repo's own models, and
 * `flex`, whose config admits any row width while its graph takes 4 (wrong widths fail
 * inside onnxruntime, in the worker).
 */
export function errorModels(): string {
  const models = tempRepository();
  cpSync(join(REPO_MODELS, 'name-gender'), join(models, 'name-gender'), { recursive: true });
  cpSync(join(REPO_MODELS, 'mlp-bench'), join(models, 'mlp-bench'), { recursive: true });
  addModel(models, 'flex', '1', linearOnnx(), { ...LINEAR_CONFIG, inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, -1] }] });
  return models;
}
