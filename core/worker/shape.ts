/**
 * A worker's shape: how many inference threads, intra-op threads and jobs in hand it runs
 * with (from the configuration, else from its cgroup limits through `planPool`), and which
 * execution provider its sessions use.
 */
import { availableParallelism } from 'node:os';
import type { BatchlineConfig, PoolName } from '../config/settings.ts';
import type { ModelVersion } from '../models/repository.ts';
import type { Logger } from '../telemetry/logger.ts';
import { readCgroupLimits } from './cgroup.ts';
import { planPool } from './sizing.ts';

/**
 * A model's resident memory estimated from its file: weights load about twice over
 * (file buffer and session), plus the session's own overhead. `batchline model measure`
 * gives the real figure for the Kubernetes resource.
 */
function estimatedModelBytes(v: ModelVersion): number {
  return 2 * v.sizeBytes + 16 * 1024 * 1024;
}

/**
 * Threads, intra-op threads and job concurrency of this worker: what the configuration
 * sets, the rest from `planPool` over the container's cgroup limits (./sizing.ts).
 */
export function workerShape(
  config: BatchlineConfig,
  models: ModelVersion[],
  maxBatch: number,
  cgroupRoot?: string,
): { threads: number; intraOpThreads: number; concurrency: number; explanation: string[] } {
  const limits = readCgroupLimits(cgroupRoot);
  const plan = planPool({
    // Sized as a CPU pool: on CUDA the GPU bound is the device's, which the operator sets.
    pool: 'cpu',
    memoryLimitBytes: limits.memoryBytes,
    cpuLimitCores: limits.cpuCores,
    hostCores: availableParallelism(),
    modelBytes: models.length ? models.map(estimatedModelBytes) : 1,
    batchSize: maxBatch,
  });
  const threads = config.workers.threads || plan.slots;
  const intraOpThreads = config.workers.intraOpThreads || Math.max(1, Math.floor(plan.cores / threads));
  // Jobs in hand: a full batch per thread plus one gathering (batch 1: two per thread, so
  // the next job is fetched while one runs).
  const concurrency = config.workers.concurrency || threads * Math.max(2, maxBatch) + (maxBatch > 1 ? maxBatch : 0);
  return { threads, intraOpThreads, concurrency, explanation: plan.explanation };
}

/** CUDA in the gpu pool when asked for or available, else CPU; the choice is logged. */
export async function chooseExecutionProvider(wanted: 'auto' | 'cpu' | 'cuda', pool: PoolName, log: Logger): Promise<'cpu' | 'cuda'> {
  if (wanted === 'cpu' || (wanted === 'auto' && pool !== 'gpu')) return 'cpu';
  const ort = await import('onnxruntime-node');
  const cuda = ort.listSupportedBackends().find((b) => b.name === 'cuda');
  let usable = false;
  if (cuda) {
    // The binding lists CUDA even when its libraries are absent; only a real session tells.
    const { existsSync } = await import('node:fs');
    const { join, dirname } = await import('node:path');
    const { createRequire } = await import('node:module');
    const dir = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    usable = existsSync(join(dir, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so'));
  }
  if (!usable) {
    if (wanted === 'cuda') log.warn('CUDA execution provider requested but its libraries are not installed; using CPU');
    else log.info('CUDA libraries not installed; the gpu pool runs on CPU');
    return 'cpu';
  }
  return 'cuda';
}
