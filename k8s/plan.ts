/**
 * Turns a ModelServer's pools into numbers: limits, the sizing plan (`core/worker/sizing.ts`),
 * the queue depth autoscaling aims at, and the time allowed for start-up.
 */
import { POOLS, type PoolName } from '../core/config/settings.ts';
import { MODEL_DEFAULTS } from '../core/models/config.ts';
import { batchingPlan, withBatchingDefaults } from '../core/batching/plan.ts';
import { planPool, PoolSizingError, mib, type PoolPlan } from '../core/worker/sizing.ts';
import { parseQuantity } from './quantity.ts';
import type { ModelServer, ModelSpec, PoolSpec } from './resource.ts';

export interface PoolSizing {
  pool: PoolName;
  spec: PoolSpec;
  models: ModelSpec[];
  limits: { cpuCores: number; memoryBytes: number; gpus: number; gpuMemoryBytes?: number };
  plan: PoolPlan;
  /**
   * The worker's batch limit the plan assumes: the largest of its models' (core/batching/plan.ts;
   * 1 in the cpu pool, which runs each job alone).
   */
  batchSize: number;
  /** The slowest model's latency objective. */
  sloMs: number;
  /** Waiting jobs per replica that scaling aims at, and where the number came from. */
  targetQueueDepth: number;
  targetFrom: string;
  startupSeconds: number;
}

/** Thrown with every message when a resource cannot be rendered. */
export class ModelServerError extends Error {
  readonly errors: string[];
  constructor(errors: string[]) {
    super(errors.map((e) => `  - ${e}`).join('\n'));
    this.name = 'ModelServerError';
    this.errors = errors;
  }
}

// Why these numbers: loading reads the file and builds the session at roughly a GiB in
// ten seconds on a slow volume; doubling that, plus a margin for the process to start
// and, on GPU nodes, for CUDA and cuDNN to initialise.
function startupSeconds(pool: PoolName, plan: PoolPlan, modelBytes: number): number {
  const loaded = (plan.slots * modelBytes) / 2 ** 30;
  const seconds = 30 + (pool === 'gpu' ? 60 : 0) + 20 * loaded;
  return Math.ceil(seconds / 5) * 5;
}

function queueTarget(spec: PoolSpec, plan: PoolPlan, sloMs: number, at: string): { depth: number; from: string } {
  const a = spec.autoscaling;
  if (a.targetQueueDepth !== undefined) return { depth: a.targetQueueDepth, from: `${at}.autoscaling.targetQueueDepth` };
  if (a.targetLatencyMs !== undefined) {
    if (a.targetLatencyMs <= sloMs) {
      throw new ModelServerError([
        `${at}.autoscaling.targetLatencyMs: ${a.targetLatencyMs} ms leaves no time to wait: the slowest model's SLO is ${sloMs} ms`,
      ]);
    }
    // A job behind D waiting jobs waits about D / concurrency inferences of sloMs each;
    // keep that wait within targetLatencyMs - sloMs.
    const depth = Math.max(1, Math.floor((plan.concurrency * (a.targetLatencyMs - sloMs)) / sloMs));
    return {
      depth,
      from: `targetLatencyMs ${a.targetLatencyMs}: floor(concurrency ${plan.concurrency} x (${a.targetLatencyMs} - ${sloMs} ms SLO) / ${sloMs} ms)`,
    };
  }
  return { depth: plan.concurrency, from: `default: one waiting job per concurrent job (${plan.concurrency})` };
}

function sizePool(ms: ModelServer, pool: PoolName, spec: PoolSpec): PoolSizing {
  const at = `spec.pools.${pool}`;
  const models = ms.spec.models.filter((m) => m.pool === pool);
  const limits = {
    cpuCores: parseQuantity(spec.resources.limits.cpu ?? 0),
    memoryBytes: parseQuantity(spec.resources.limits.memory ?? 0),
    gpus: spec.resources.limits['nvidia.com/gpu'] ?? 0,
    gpuMemoryBytes: spec.gpuMemory !== undefined ? parseQuantity(spec.gpuMemory) : undefined,
  };
  const modelBytes = models.map((m) => parseQuantity(m.memory));
  const batchSize = Math.max(...models.map((m) => batchingPlan(pool, { batching: withBatchingDefaults(m.batching) }).worker.maxBatchSize));
  const sloMs = Math.max(...models.map((m) => m.slo?.latencyMs ?? MODEL_DEFAULTS.batching.sloMs));
  let plan: PoolPlan;
  try {
    plan = planPool({
      pool,
      memoryLimitBytes: limits.memoryBytes,
      cpuLimitCores: limits.cpuCores,
      baseProcessBytes: spec.baseMemory !== undefined ? parseQuantity(spec.baseMemory) : undefined,
      modelBytes,
      gpuModelBytes: models.map((m) => parseQuantity(m.gpuMemory ?? m.memory)),
      gpus: limits.gpus,
      gpuMemoryBytes: limits.gpuMemoryBytes,
      gpuReserveBytes: spec.gpuReserve !== undefined ? parseQuantity(spec.gpuReserve) : undefined,
      batchSize,
      ...(spec.modelMemory !== undefined
        ? { modelMemoryBytes: parseQuantity(spec.modelMemory), modelMemoryFrom: `${at}.modelMemory` }
        : {}),
    });
  } catch (e) {
    if (!(e instanceof PoolSizingError)) throw e;
    const field = {
      memory: `${at}.resources.limits.memory`,
      'gpu-memory': `${at}.gpuMemory`,
      gpus: `${at}.resources.limits.nvidia.com/gpu`,
      cpu: `${at}.resources.limits.cpu`,
    }[e.bound];
    const each = models.map((m) => `${m.name} ${mib(parseQuantity(m.memory))}`).join(', ');
    throw new ModelServerError([`${field}: ${e.message} [models: ${each}]`]);
  }
  const target = queueTarget(spec, plan, sloMs, at);
  const modelTotal = modelBytes.reduce((a, b) => a + b, 0);
  return {
    pool,
    spec,
    models,
    limits,
    plan,
    batchSize,
    sloMs,
    targetQueueDepth: target.depth,
    targetFrom: target.from,
    startupSeconds: spec.startupSeconds ?? startupSeconds(pool, plan, modelTotal),
  };
}

/**
 * Sizes every pool the resource defines, in pool order (cpu, gpu).
 * @throws {ModelServerError} naming the field and numbers when a pool cannot be sized
 */
export function planPools(ms: ModelServer): PoolSizing[] {
  const out: PoolSizing[] = [];
  const errors: string[] = [];
  for (const pool of POOLS) {
    const spec = ms.spec.pools[pool];
    if (!spec) continue;
    try {
      out.push(sizePool(ms, pool, spec));
    } catch (e) {
      if (!(e instanceof ModelServerError)) throw e;
      errors.push(...e.errors);
    }
  }
  if (errors.length) throw new ModelServerError(errors);
  return out;
}
