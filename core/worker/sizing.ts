/**
 * Worker pool sizing: how many inference slots a worker process runs, and how many
 * onnxruntime intra-op threads each slot gets.
 *
 * A slot is one inference thread with its own copy of every model of its pool
 * (onnxruntime-node's `run` is synchronous on its thread, so parallel inference needs
 * one session per thread). The rule:
 *
 *     slots          = min(memory bound, CPU bound[, GPU memory bound])
 *     memory bound   = floor((memory limit − base process memory) / per-slot memory)
 *     per-slot       = Σ model memory of the pool + slot overhead (a thread's V8 isolate)
 *     CPU bound      = max(1, floor(CPU limit in cores))
 *     GPU bound      = GPUs × floor((GPU memory − reserve) / Σ model GPU memory)
 *     intra-op       = max(1, floor(cores / slots))   so slots × intra-op ≤ cores
 *     concurrency    = slots × batch size              (jobs in hand: the GPU pool batches)
 *
 * With a model memory budget B (`workers.modelMemoryBytes`, docs/RESIDENCY.md) models load
 * on demand into B, each into one slot, so B is set aside once and a slot costs only its
 * overhead (B must hold the largest model):
 *
 *     memory bound   = floor((memory limit − base − B) / slot overhead)
 *
 * The old design rule "no more than 2 × cores + 1 workers" suits I/O-bound servers,
 * whose workers mostly wait; inference keeps a core busy for the whole call, so
 * more runnable threads than cores only adds context switches and cache misses.
 * It is still reported (`bounds.ioRule`) so the explanation shows what changed.
 *
 * Pure: no I/O. The renderer calls it with a resource's limits; a worker calls it at
 * start with its cgroup limits (see `core/worker/cgroup.ts`).
 */

/** Resident memory of a worker process before any model is loaded (Node, onnxruntime, BullMQ, pino), with margin. Measured at about 90 MiB. */
export const DEFAULT_BASE_PROCESS_BYTES = 160 * 1024 * 1024;
/** Memory one more inference thread costs beyond its models (V8 isolate, onnxruntime binding). Measured at about 13 MiB. */
export const DEFAULT_SLOT_OVERHEAD_BYTES = 32 * 1024 * 1024;
/** GPU memory kept back per GPU for the CUDA context, cuDNN workspaces and fragmentation. */
export const DEFAULT_GPU_RESERVE_BYTES = 1024 * 1024 * 1024;

export type SizingBound = 'memory' | 'cpu' | 'gpu-memory';

export interface PoolSizingInput {
  pool: 'cpu' | 'gpu';
  /** Memory limit of the process's container; undefined means none. */
  memoryLimitBytes?: number;
  /** CPU limit in cores (may be fractional); undefined means none, and `hostCores` is used. */
  cpuLimitCores?: number;
  /** Cores visible without a limit (`os.availableParallelism()`). @defaultValue 1 */
  hostCores?: number;
  /** @defaultValue {@link DEFAULT_BASE_PROCESS_BYTES} */
  baseProcessBytes?: number;
  /** @defaultValue {@link DEFAULT_SLOT_OVERHEAD_BYTES} */
  slotOverheadBytes?: number;
  /** Resident memory of each model the pool runs (from `batchline model measure`). */
  modelBytes: number | readonly number[];
  /** GPU memory of each model; defaults to `modelBytes`. */
  gpuModelBytes?: number | readonly number[];
  /** GPUs the process may use (gpu pool). */
  gpus?: number;
  /** Memory of one GPU; undefined skips the GPU memory bound. */
  gpuMemoryBytes?: number;
  /** @defaultValue {@link DEFAULT_GPU_RESERVE_BYTES} */
  gpuReserveBytes?: number;
  /** Largest batch a slot forms; concurrency is slots × this. @defaultValue 1 */
  batchSize?: number;
  /**
   * The model memory budget (`workers.modelMemoryBytes`, docs/RESIDENCY.md): models load on
   * demand into it, each into one slot, so a slot costs only its overhead and the budget is set
   * aside once; it must hold the largest model. Undefined: every model loaded in every slot.
   */
  modelMemoryBytes?: number;
  /** Where the budget came from, for the explanation. @defaultValue 'model memory budget' */
  modelMemoryFrom?: string;
}

export interface PoolPlan {
  slots: number;
  intraOpThreads: number;
  /** Jobs a worker process takes at once (BullMQ concurrency). */
  concurrency: number;
  /** The bound that set `slots` (the first of memory, gpu-memory, cpu on a tie). */
  decidedBy: SizingBound;
  /** Each bound's slot count; null where there is no limit. `ioRule` is 2 × cores + 1, reported, not applied. */
  bounds: { memory: number | null; cpu: number; gpuMemory: number | null; ioRule: number };
  cores: number;
  perSlotBytes: number;
  /**
   * Memory for resident models the plan leaves: the budget when one was given, else what the
   * limit leaves once the base and the slots' overhead are taken (every model fits in it);
   * undefined without a memory limit. The renderer sets `workers.modelMemoryBytes` to it.
   */
  modelMemoryBytes?: number;
  /** With a budget: how many of the pool's models (smallest first) are resident at once in one worker, each once per slot. */
  modelsResident?: number;
  /** One line per step, for `k8s explain` and worker logs. */
  explanation: string[];
}

/** Thrown when a limit cannot hold one slot; `bound` names the limit at fault. */
export class PoolSizingError extends Error {
  readonly bound: SizingBound | 'gpus';
  constructor(bound: SizingBound | 'gpus', message: string) {
    super(message);
    this.name = 'PoolSizingError';
    this.bound = bound;
  }
}

const MiB = 1024 * 1024;

/** Formats bytes as MiB with at most one decimal, for messages. */
export function mib(bytes: number): string {
  const v = bytes / MiB;
  return `${Number.isInteger(v) ? v : v.toFixed(1)} MiB`;
}

function sum(v: number | readonly number[]): number {
  return typeof v === 'number' ? v : v.reduce((a, b) => a + b, 0);
}

/**
 * Sizes one worker pool: slots, intra-op threads and concurrency from memory, CPU and
 * (for the gpu pool) GPU memory limits. See the module comment for the rule.
 *
 * @throws {PoolSizingError} when memory (or GPU memory) cannot hold one copy of the
 *   pool's models, or a gpu pool has no GPU; the message carries the numbers.
 */
export function planPool(input: PoolSizingInput): PoolPlan {
  const base = input.baseProcessBytes ?? DEFAULT_BASE_PROCESS_BYTES;
  const overhead = input.slotOverheadBytes ?? DEFAULT_SLOT_OVERHEAD_BYTES;
  const models = sum(input.modelBytes);
  if (!(models > 0)) throw new PoolSizingError('memory', `${input.pool} pool: model memory must be positive, got ${models} bytes`);
  const perSlot = models + overhead;
  const cores = input.cpuLimitCores ?? input.hostCores ?? 1;
  const lines: string[] = [];

  let memory: number | null = null;
  const budget = input.modelMemoryBytes;
  if (budget !== undefined) {
    const sizes = typeof input.modelBytes === 'number' ? [input.modelBytes] : [...input.modelBytes];
    const largest = Math.max(...sizes);
    if (largest > budget)
      throw new PoolSizingError(
        'memory',
        `${input.pool} pool: its largest model (${mib(largest)}) does not fit in the model memory budget of ${mib(budget)}`,
      );
    const from = input.modelMemoryFrom ?? 'model memory budget';
    if (input.memoryLimitBytes !== undefined) {
      const left = input.memoryLimitBytes - base - budget;
      const byLimit = Math.floor(left / overhead);
      if (byLimit < 1)
        throw new PoolSizingError(
          'memory',
          `${input.pool} pool: memory limit ${mib(input.memoryLimitBytes)} cannot hold the model memory budget and one slot: ` +
            `base ${mib(base)} + budget ${mib(budget)} + slot overhead ${mib(overhead)} = ${mib(base + budget + overhead)}`,
        );
      memory = byLimit;
      lines.push(
        `memory bound: floor((${mib(input.memoryLimitBytes)} limit - ${mib(base)} base - ${mib(budget)} models (${from})) / ${mib(overhead)} overhead) = ${memory}`,
      );
    } else {
      lines.push(`memory bound: none (no memory limit; models in ${mib(budget)}, ${from})`);
    }
  } else if (input.memoryLimitBytes !== undefined) {
    const free = input.memoryLimitBytes - base;
    memory = Math.floor(free / perSlot);
    if (memory < 1) {
      throw new PoolSizingError(
        'memory',
        `${input.pool} pool: memory limit ${mib(input.memoryLimitBytes)} cannot hold one copy of its models: ` +
          `base process ${mib(base)} + one slot ${mib(perSlot)} (models ${mib(models)} + slot overhead ${mib(overhead)}) = ${mib(base + perSlot)}`,
      );
    }
    lines.push(
      `memory bound: floor((${mib(input.memoryLimitBytes)} limit - ${mib(base)} base) / ${mib(perSlot)} per slot (models ${mib(models)} + overhead ${mib(overhead)})) = ${memory}`,
    );
  } else {
    lines.push('memory bound: none (no memory limit)');
  }

  let gpuMemory: number | null = null;
  if (input.pool === 'gpu') {
    const gpus = input.gpus ?? 0;
    if (gpus < 1) throw new PoolSizingError('gpus', `gpu pool: needs at least one GPU, got ${gpus}`);
    if (input.gpuMemoryBytes !== undefined) {
      const reserve = input.gpuReserveBytes ?? DEFAULT_GPU_RESERVE_BYTES;
      const gpuModels = sum(input.gpuModelBytes ?? input.modelBytes);
      const perGpu = Math.floor((input.gpuMemoryBytes - reserve) / gpuModels);
      if (perGpu < 1) {
        throw new PoolSizingError(
          'gpu-memory',
          `gpu pool: GPU memory ${mib(input.gpuMemoryBytes)} cannot hold one copy of its models: ` +
            `reserve ${mib(reserve)} + models ${mib(gpuModels)} = ${mib(reserve + gpuModels)}`,
        );
      }
      gpuMemory = gpus * perGpu;
      lines.push(
        `gpu-memory bound: ${gpus} GPU x floor((${mib(input.gpuMemoryBytes)} - ${mib(reserve)} reserve) / ${mib(gpuModels)} models) = ${gpuMemory}`,
      );
    } else {
      lines.push('gpu-memory bound: none (GPU memory unknown)');
    }
  }

  const cpu = Math.max(1, Math.floor(cores));
  const ioRule = 2 * Math.floor(Math.max(1, cores)) + 1;
  lines.push(
    `cpu bound: max(1, floor(${cores} cores)) = ${cpu} (slots x intra-op threads <= cores; the I/O rule 2 x cores + 1 = ${ioRule} is not applied)`,
  );
  if (cores < 1) lines.push(`note: a CPU limit below one core throttles even a single slot`);

  // Ties go to the first listed: memory, then GPU memory, then CPU.
  const candidates: [SizingBound, number | null][] = [
    ['memory', memory],
    ['gpu-memory', gpuMemory],
    ['cpu', cpu],
  ];
  let slots = Infinity;
  let decidedBy: SizingBound = 'cpu';
  for (const [name, value] of candidates) {
    if (value !== null && value < slots) {
      slots = value;
      decidedBy = name;
    }
  }
  const intraOpThreads = Math.max(1, Math.floor(cores / slots));
  const concurrency = slots * Math.max(1, input.batchSize ?? 1);
  lines.push(
    `decided by ${decidedBy}: ${slots} slot${slots === 1 ? '' : 's'} x ${intraOpThreads} intra-op thread${intraOpThreads === 1 ? '' : 's'}, concurrency ${concurrency}`,
  );

  let modelMemoryBytes: number | undefined;
  let modelsResident: number | undefined;
  if (budget !== undefined) {
    modelMemoryBytes = budget;
    const sizes = (typeof input.modelBytes === 'number' ? [input.modelBytes] : [...input.modelBytes]).sort((a, b) => a - b);
    let used = 0;
    modelsResident = 0;
    for (const size of sizes) {
      if (used + size > budget) break;
      used += size;
      modelsResident++;
    }
    lines.splice(
      lines.length - 1,
      0,
      `model memory: ${mib(budget)} holds ${modelsResident} of the pool's ${sizes.length} model${sizes.length === 1 ? '' : 's'} at once (smallest first, each in one slot); the rest load on demand, least recently used evicted`,
    );
  } else if (input.memoryLimitBytes !== undefined) {
    modelMemoryBytes = input.memoryLimitBytes - base - slots * overhead;
  }

  return {
    slots,
    intraOpThreads,
    concurrency,
    decidedBy,
    bounds: { memory, cpu, gpuMemory, ioRule },
    cores,
    perSlotBytes: budget !== undefined ? overhead : perSlot,
    explanation: lines,
    ...(modelMemoryBytes !== undefined ? { modelMemoryBytes } : {}),
    ...(modelsResident !== undefined ? { modelsResident } : {}),
  };
}
