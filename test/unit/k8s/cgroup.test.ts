import { describe, it, expect } from 'vitest';
import { fileURLToPath } from 'node:url';
import { readCgroupLimits, type CgroupLimits } from '../../../core/worker/cgroup.ts';
import { planPool } from '../../../core/worker/sizing.ts';

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/cgroup/${name}`, import.meta.url));
const noProc = fixture('none/no-such-file');
const Mi = 2 ** 20;

describe('readCgroupLimits', () => {
  const table: [string, string, CgroupLimits][] = [
    ['v2 with limits', 'v2-limited', { version: 2, memoryBytes: 1024 * Mi, cpuCores: 2 }],
    ['v2 with half a core', 'v2-fractional', { version: 2, memoryBytes: 512 * Mi, cpuCores: 0.5 }],
    ['v2 without limits ("max")', 'v2-unlimited', { version: 2, memoryBytes: undefined, cpuCores: undefined }],
    ['v1 with limits', 'v1-limited', { version: 1, memoryBytes: 2048 * Mi, cpuCores: 1.5 }],
    ['v1 without limits (huge number, quota -1, cpu,cpuacct)', 'v1-unlimited', { version: 1, memoryBytes: undefined, cpuCores: undefined }],
    ['no cgroup filesystem', 'none', { version: null }],
    ['missing folder', 'does-not-exist', { version: null }],
  ];

  it.each(table)('%s', (_name, dir, expected) => {
    expect(readCgroupLimits(fixture(dir), noProc)).toEqual(expected);
  });

  it("v2 without a cgroup namespace follows /proc/self/cgroup to the process's own folder", () => {
    expect(readCgroupLimits(fixture('v2-nested'), fixture('v2-nested.proc-self-cgroup'))).toEqual({
      version: 2,
      memoryBytes: 320 * Mi,
      cpuCores: 4,
    });
  });

  it('feeds planPool at worker start', () => {
    const limits = readCgroupLimits(fixture('v2-limited'), noProc);
    const plan = planPool({
      pool: 'cpu',
      memoryLimitBytes: limits.memoryBytes,
      cpuLimitCores: limits.cpuCores,
      hostCores: 64,
      modelBytes: [14 * Mi, 39 * Mi],
    });
    expect([plan.slots, plan.intraOpThreads, plan.decidedBy]).toEqual([2, 1, 'cpu']);
    const unlimited = readCgroupLimits(fixture('v2-unlimited'), noProc);
    const host = planPool({
      pool: 'cpu',
      memoryLimitBytes: unlimited.memoryBytes,
      cpuLimitCores: unlimited.cpuCores,
      hostCores: 8,
      modelBytes: 14 * Mi,
    });
    expect([host.slots, host.decidedBy]).toEqual([8, 'cpu']);
  });

  it('reads this machine without throwing', () => {
    const limits = readCgroupLimits();
    expect([1, 2, null]).toContain(limits.version);
  });
});
