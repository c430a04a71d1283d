/**
 * Execution providers as a chain. `workers.executionProvider: auto` gives the gpu pool CUDA,
 * then WebGPU, then CPU; an explicit provider is a chain of one (plus CPU with
 * `workers.cpuFallback`). The first inference thread of a worker walks the chain with the
 * pool's own models (core/runtime/inference-thread.ts): a provider is taken when every model
 * that runs on CPU also opens on it and answers a warm-up run; otherwise it is skipped, with
 * the reason kept for the log, the metrics, the worker registry and the operations view.
 *
 * onnxruntime's own list (`executionProviders: ['webgpu', 'cpu']`) is no chain: a provider that
 * fails to initialise (no WebGPU adapter, no CUDA libraries) fails the whole session rather than
 * giving way to the next. Within a session onnxruntime already runs the nodes a GPU provider has
 * no kernel for on its CPU provider, so a session is given one provider only.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { InferenceSession } from 'onnxruntime-node';
import { explainNoAdapter } from './vulkan.ts';

export type ProviderName = 'cuda' | 'webgpu' | 'cpu';
/** `workers.executionProvider` (core/config/settings.ts lists the same words). */
export type ProviderRequest = 'auto' | ProviderName;

/** `workers.webgpu` (core/config/settings.ts documents each option and its default). */
export interface WebgpuOptions {
  preferredLayout: 'NCHW' | 'NHWC';
  validationMode: 'disabled' | 'wgpuOnly' | 'basic' | 'full';
  storageBufferCacheMode: 'disabled' | 'lazyRelease' | 'simple' | 'bucket';
}

/** Why a provider was not taken, as a metric label can carry it. */
export type SkipKind = 'not-installed' | 'no-adapter' | 'session-failed' | 'warm-up-failed';

/** One provider tried by the chain: taken, or skipped with its reason. */
export interface ProviderAttempt {
  provider: ProviderName;
  ok: boolean;
  kind?: SkipKind;
  reason?: string;
  /** Time spent on it: sessions created and warm-up runs. */
  ms: number;
}

/** What the thread needs to open sessions on any provider. */
export interface ProviderSettings {
  intraOpThreads: number;
  webgpu: WebgpuOptions;
}

/** The providers a worker of `pool` tries, in order. */
export function providerChain(requested: ProviderRequest, pool: 'cpu' | 'gpu', cpuFallback: boolean): ProviderName[] {
  if (requested === 'auto') return pool === 'gpu' ? ['cuda', 'webgpu', 'cpu'] : ['cpu'];
  if (requested === 'cpu') return ['cpu'];
  return cpuFallback ? [requested, 'cpu'] : [requested];
}

export const isGpu = (p: ProviderName | undefined): boolean => p === 'cuda' || p === 'webgpu';

/** Session options for `provider`, the same for the worker, the bench and the GPU check. */
export function sessionOptions(provider: ProviderName, s: ProviderSettings): InferenceSession.SessionOptions {
  const ep: InferenceSession.ExecutionProviderConfig =
    provider === 'webgpu'
      ? {
          name: 'webgpu',
          preferredLayout: s.webgpu.preferredLayout,
          validationMode: s.webgpu.validationMode,
          storageBufferCacheMode: s.webgpu.storageBufferCacheMode,
        }
      : provider;
  return {
    executionProviders: [ep],
    intraOpNumThreads: s.intraOpThreads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    // Idle intra-op threads spin; with several threads and processes sharing cores that steals CPU.
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
}

/**
 * Why CUDA cannot be tried, when its provider libraries are absent. The binding lists CUDA
 * whether or not the install step fetched them (it is skipped offline: .npmrc), and asking for
 * a session without them prints onnxruntime's own error to stderr; the files tell first.
 */
export function cudaMissing(): string | undefined {
  const dir = join(
    dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json')),
    'bin',
    'napi-v6',
    process.platform,
    process.arch,
  );
  const missing = ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'].filter((f) => !existsSync(join(dir, f)));
  if (missing.length === 0) return undefined;
  return `CUDA provider libraries not installed (${missing.join(', ')} absent from ${dir}: onnxruntime-node's install step fetches them, as the GPU image does with onnxruntime-node-install=cuda12)`;
}

/** onnxruntime's message without the source location and assertion it starts with. */
function shortMessage(message: string): string {
  const first = message.split('\n')[0].trim();
  const stripped = first.replace(/^\/onnxruntime_src\/\S+\s.*?(?:was false\.\s*|\]\s*)/, '');
  return stripped || first;
}

/** A failure of `provider` at session creation or warm-up, as one line and a kind. */
export function explainFailure(provider: ProviderName, stage: 'session' | 'warm-up', message: string): { kind: SkipKind; reason: string } {
  if (provider === 'webgpu' && /Failed to get a WebGPU adapter|No supported adapters/i.test(message))
    return { kind: 'no-adapter', reason: `no WebGPU adapter: ${explainNoAdapter()} (${shortMessage(message)})` };
  if (provider === 'cuda' && /Failed to load shared library|libcudart|libcublas|libcudnn/i.test(message))
    return { kind: 'not-installed', reason: `CUDA libraries could not be loaded: ${shortMessage(message)}` };
  return {
    kind: stage === 'session' ? 'session-failed' : 'warm-up-failed',
    reason: `${stage === 'session' ? 'session creation' : 'the warm-up run'} failed on ${provider}: ${shortMessage(message)}`,
  };
}

/** One line saying what a pool runs and why the providers before it were skipped. */
export function describeChoice(requested: ProviderRequest, provider: ProviderName | undefined, attempts: ProviderAttempt[]): string {
  const skipped = attempts.filter((a) => !a.ok);
  const why = skipped.map((a) => `${a.provider} skipped: ${a.reason}`).join('; ');
  if (!provider) return `no execution provider can run (requested ${requested})${why ? `: ${why}` : ''}`;
  return `${provider} (requested ${requested})${why ? `; ${why}` : ''}`;
}

/**
 * Batch sizes a session is warmed up with. One run answers whether the provider works; on a GPU
 * provider, WebGPU builds a compute pipeline the first time it sees a new dispatch shape, which
 * takes from milliseconds to a second, so the batch sizes the pool will form (powers of two up to
 * the model's largest batch) are run once before the first request pays for them.
 */
export function warmupSizes(provider: ProviderName, maxBatchSize: number, batchable: boolean): number[] {
  if (!batchable || !isGpu(provider)) return [1];
  const sizes: number[] = [];
  for (let n = 1; n <= Math.min(1024, Math.max(1, maxBatchSize)); n *= 2) sizes.push(n);
  if (sizes.at(-1)! < maxBatchSize && maxBatchSize <= 1024) sizes.push(maxBatchSize);
  return sizes;
}
