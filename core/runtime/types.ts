/** Shapes passed between the worker process and its inference threads. */
import type { NormalizedInput } from '../prediction/input.ts';
import type { ModelConfig, Datatype } from '../models/config.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { ProviderAttempt, ProviderName, ProviderSettings } from './providers.ts';

export interface LoadedModelSpec {
  /** `<name>@<version>` */
  key: string;
  path: string;
  config: ModelConfig;
}

export interface ThreadInit {
  models: LoadedModelSpec[];
  /** Providers to try in order (core/runtime/providers.ts); a thread started after the first gets the one it took. */
  chain: ProviderName[];
  settings: ProviderSettings;
}

/** The provider a thread's sessions run on (undefined: not decided, for want of models or of a provider that runs them). */
export interface ProviderOutcome {
  provider?: ProviderName;
  attempts: ProviderAttempt[];
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
  /** The provider another thread took, for a thread that has not decided yet. */
  provider?: ProviderName;
}

/** Releases the sessions of `keys` (an eviction); queued behind the runs in hand. */
export interface UnloadRequest {
  type: 'unload';
  id: number;
  keys: string[];
}

export type ThreadMessage =
  | ({ type: 'ready'; loaded: string[]; failed: { key: string; error: string }[] } & ProviderOutcome)
  | ({ type: 'loaded'; id: number; loaded: string[]; failed: { key: string; error: string }[] } & ProviderOutcome)
  | { type: 'unloaded'; id: number }
  | { type: 'result'; id: number; outputs: OutputTensor[]; inferenceMs: number; rows: number }
  | { type: 'error'; id: number; code: string; message: string };
