/**
 * server/idle-memory.ts: after a burst, a last-resort collection gives the pages V8 pooled back
 * to the system (a plain full GC does not), and the API does it by itself once idle.
 */
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { releaseMemory, releaseMemoryWhenIdle } from '../../../server/idle-memory.ts';
import { until } from '../../support/wait.ts';

const MB = 1024 * 1024;

/** Allocates and drops a few hundred MB of small objects, as a burst of requests does. */
async function burst(): Promise<void> {
  let keep: unknown[][] = [];
  for (let r = 0; r < 24; r++) {
    keep.push(Array.from({ length: 200_000 }, (_, i) => ({ i, s: `x${i}` })));
    if (keep.length > 6) keep.shift();
    await new Promise((resolve) => setImmediate(resolve));
  }
  keep = [];
}

describe('memory given back when idle', () => {
  it('a last-resort collection after a burst returns its pages: heap and resident memory fall', async () => {
    await burst();
    const r = releaseMemory();
    expect(r.heapBefore - r.heapAfter).toBeGreaterThan(100 * MB);
    expect(r.rssBefore - r.rssAfter).toBeGreaterThan(100 * MB);
  });

  it('an idle process releases once after it grew, and not again while it stays put', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const idle = releaseMemoryWhenIdle(logger, { checkMs: 200 });
    try {
      await burst();
      await until(() => idle.releases >= 1, 'a release once idle', 20_000);
      expect(lines.filter((l) => l.includes('"msg":"idle: memory given back"'))).toHaveLength(1);
      // Nothing grew since: a few more idle periods bring no second release.
      const count = idle.releases;
      await new Promise((r) => setTimeout(r, 1000));
      expect(idle.releases).toBe(count);
    } finally {
      idle.stop();
    }
  });
});
