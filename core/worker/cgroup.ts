/**
 * Reads the memory and CPU limits the kernel enforces on this process's container, so a
 * worker can size itself (`core/worker/sizing.ts`) when its configuration does not.
 *
 * cgroup v2: `memory.max` ("max" or bytes), `cpu.max` ("max 100000" or "200000 100000").
 * cgroup v1: `memory/memory.limit_in_bytes` (a huge number when unlimited),
 *            `cpu/cpu.cfs_quota_us` (-1 when unlimited) / `cpu/cpu.cfs_period_us`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CgroupLimits {
  /** Memory limit in bytes; undefined when there is none. */
  memoryBytes?: number;
  /** CPU quota in cores (may be fractional); undefined when there is none. */
  cpuCores?: number;
  /** Which hierarchy was found; null when neither (not Linux, or no cgroup filesystem). */
  version: 1 | 2 | null;
}

// v1 reports "no limit" as PAGE_COUNTER_MAX rounded to pages (9223372036854771712 on
// 4 KiB pages); anything this large is no limit on any real machine.
const UNLIMITED_V1 = 2 ** 60;

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function positive(text: string | undefined): number | undefined {
  if (text === undefined || text === '' || text === 'max') return undefined;
  const n = Number(text);
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

function cores(quota: number | undefined, period: number | undefined): number | undefined {
  return quota !== undefined && period !== undefined ? quota / period : undefined;
}

/**
 * The v2 directory holding this process's limits: the mount root when it carries them
 * (a container with its own cgroup namespace), else the path `/proc/self/cgroup` names.
 */
function v2Dir(root: string, procSelfCgroup: string): string {
  if (existsSync(join(root, 'memory.max')) || existsSync(join(root, 'cpu.max'))) return root;
  const line = read(procSelfCgroup)
    ?.split('\n')
    .find((l) => l.startsWith('0::'));
  const rel = line?.slice(3);
  return rel && rel !== '/' ? join(root, rel) : root;
}

/**
 * Reads this process's cgroup memory and CPU limits.
 *
 * @param root the cgroup mount point (a fixture folder in tests)
 * @param procSelfCgroup where to find this process's v2 cgroup path when `root` itself has no limit files
 */
export function readCgroupLimits(root = '/sys/fs/cgroup', procSelfCgroup = '/proc/self/cgroup'): CgroupLimits {
  if (existsSync(join(root, 'cgroup.controllers'))) {
    const dir = v2Dir(root, procSelfCgroup);
    const [quota, period] = (read(join(dir, 'cpu.max')) ?? '').split(/\s+/);
    return {
      version: 2,
      memoryBytes: positive(read(join(dir, 'memory.max'))),
      cpuCores: cores(positive(quota), positive(period ?? '100000')),
    };
  }
  const memoryFile = join(root, 'memory', 'memory.limit_in_bytes');
  // The CPU controller is mounted as `cpu`, `cpu,cpuacct` or both (one a link to the other).
  const cpuDir = ['cpu', 'cpu,cpuacct'].map((d) => join(root, d)).find((d) => existsSync(join(d, 'cpu.cfs_quota_us')));
  if (!existsSync(memoryFile) && cpuDir === undefined) return { version: null };
  const memory = positive(read(memoryFile));
  return {
    version: 1,
    memoryBytes: memory !== undefined && memory < UNLIMITED_V1 ? memory : undefined,
    cpuCores: cpuDir
      ? cores(positive(read(join(cpuDir, 'cpu.cfs_quota_us'))), positive(read(join(cpuDir, 'cpu.cfs_period_us'))))
      : undefined,
  };
}
