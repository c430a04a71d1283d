/**
 * A worker's shape: how many inference threads, intra-op threads and jobs in hand it runs
 * with (from the configuration, else from its cgroup limits through `planPool`, and one
 * inference thread on a GPU provider). Which provider that is: core/runtime/providers.ts.
 */
import { availableParallelism } from 'node:os';
import type { BatchlineConfig } from '../config/settings.ts';
import type { ModelVersion } from '../models/repository.ts';
import { isGpu, type ProviderName } from '../runtime/providers.ts';
import { readCgroupLimits } from './cgroup.ts';
import { planPool } from './sizing.ts';
import { modelBudget } from './residency.ts';

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
 * sets, the rest from `planPool` over the container's cgroup limits (./sizing.ts). On a GPU
 * provider one inference thread unless `workers.threads` says otherwise: runs on one device's
 * queue serialize, and batching, not more threads, is what keeps it busy.
 */
export function workerShape(
  config: BatchlineConfig,
  models: ModelVersion[],
  maxBatch: number,
  cgroupRoot?: string,
  provider?: ProviderName,
): { threads: number; intraOpThreads: number; concurrency: number; explanation: string[] } {
  const limits = readCgroupLimits(cgroupRoot);
  const budget = modelBudget(config.workers.modelMemoryBytes, limits);
  // Under a budget, a model larger than all of it is refused per request (MODEL_TOO_LARGE), not sized for.
  const sizes = models.map(estimatedModelBytes).filter((b) => budget.bytes === undefined || b <= budget.bytes);
  const plan = planPool({
    // Sized as a CPU pool: on CUDA the GPU bound is the device's, which the operator sets.
    pool: 'cpu',
    memoryLimitBytes: limits.memoryBytes,
    cpuLimitCores: limits.cpuCores,
    hostCores: availableParallelism(),
    modelBytes: sizes.length ? sizes : 1,
    batchSize: maxBatch,
    ...(budget.bytes !== undefined && budget.bytes > 0
      ? { modelMemoryBytes: budget.bytes, modelMemoryFrom: 'the model memory budget' }
      : {}),
  });
  const onGpu = isGpu(provider) && !config.workers.threads;
  const threads = config.workers.threads || (onGpu ? 1 : plan.slots);
  // Intra-op threads as the CPU plan gives them: on a GPU they serve the nodes left to the CPU provider.
  const intraOpThreads = config.workers.intraOpThreads || Math.max(1, Math.floor(plan.cores / (config.workers.threads || plan.slots)));
  // Jobs in hand: a full batch per thread plus one gathering (batch 1: two per thread, so
  // the next job is fetched while one runs).
  const concurrency = config.workers.concurrency || threads * Math.max(2, maxBatch) + (maxBatch > 1 ? maxBatch : 0);
  const explanation = onGpu
    ? [...plan.explanation, `one inference thread on ${provider}: runs on one GPU queue serialize; batching keeps it busy`]
    : plan.explanation;
  return { threads, intraOpThreads, concurrency, explanation };
}
