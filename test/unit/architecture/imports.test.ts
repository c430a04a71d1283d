/**
 * The import rules of docs/ARCHITECTURE.md hold over the whole tree: no cycle between files
 * or rooms, and each room imports only what its row allows. `npm run check:imports` prints
 * the same verdict.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ROOMS, ROOT, findCycles, importGraph, roomGraph, ruleBreaks } from '../../../scripts/check-imports.ts';

const graph = importGraph();

describe('imports', () => {
  it('form no cycle, between files or between rooms', () => {
    expect(graph.size).toBeGreaterThan(150);
    expect(findCycles(graph)).toEqual([]);
    expect(findCycles(roomGraph(graph))).toEqual([]);
  });

  it('each room imports only what its row allows', () => {
    expect(ruleBreaks(graph)).toEqual([]);
  });

  it('the rules themselves have no cycle (the tools, which may import anything, aside)', () => {
    const rules = new Map(
      Object.entries(ROOMS)
        .filter(([, to]) => !to.includes('*'))
        .map(([r, to]) => [r, [...to]]),
    );
    expect(findCycles(rules)).toEqual([]);
  });

  it('finds a cycle where there is one (the check is not vacuous)', () => {
    const cyclic = new Map([
      ['a.ts', ['b.ts']],
      ['b.ts', ['c.ts']],
      ['c.ts', ['a.ts']],
      ['d.ts', ['a.ts']],
    ]);
    expect(findCycles(cyclic)).toEqual([['a.ts', 'b.ts', 'c.ts', 'a.ts']]);
    expect(ruleBreaks(new Map([['core/errors/registry.ts', ['core/api/catalog.ts']]]))).toEqual([
      'core/errors/registry.ts -> core/api/catalog.ts (core/errors may not import core/api)',
    ]);
  });

  it('docs/ARCHITECTURE.md states the same rows', () => {
    const doc = readFileSync(`${ROOT}/docs/ARCHITECTURE.md`, 'utf8');
    const rows = new Map<string, string[]>();
    for (const m of doc.matchAll(/^\| ((?:`[^`]+`(?:, )?)+) \| [^|]+ \| ([^|]+) \|$/gm)) {
      const rooms = [...m[1].matchAll(/`([^`]+)`/g)].map((r) => r[1]);
      const allowed = m[2].trim() === '–' ? [] : m[2].trim() === 'anything' ? ['*'] : [...m[2].matchAll(/`([^`]+)`/g)].map((r) => r[1]);
      for (const r of rooms) rows.set(r, allowed);
    }
    expect(Object.fromEntries([...rows].sort())).toEqual(Object.fromEntries(Object.entries(ROOMS).sort()));
  });
});
