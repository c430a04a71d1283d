/** Shapes passed between the worker process and its inference threads. */
import type { NormalizedInput } from '../prediction/input.ts';
import type { ModelConfig, Datatype } from '../models/config.ts';
import type { Tensor } from '../tensor/tensor.ts';

export interface LoadedModelSpec {
  /** `<name>@<version>` */
  key: string;
  path: string;
  config: ModelConfig;
}

export interface ThreadInit {
  models: LoadedModelSpec[];
  intraOpThreads: number;
  executionProvider: 'cpu' | 'cuda';
}

/** One output tensor of a run, batch dimension first. */
export type OutputTensor = Tensor<
  Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | number[],
  Datatype | string
>;

export interface RunRequest {
  type: 'run';
  id: number;
  key: string;
  input: NormalizedInput;
}

export interface LoadRequest {
  type: 'load';
  id: number;
  models: LoadedModelSpec[];
}

export type ThreadMessage =
  | { type: 'ready'; loaded: string[]; failed: { key: string; error: string }[]; executionProvider: string }
  | { type: 'loaded'; id: number; loaded: string[]; failed: { key: string; error: string }[] }
  | { type: 'result'; id: number; outputs: OutputTensor[]; inferenceMs: number; rows: number }
  | { type: 'error'; id: number; code: string; message: string };
