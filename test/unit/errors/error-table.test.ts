/** The README's error table and the registry (core/errors/registry.ts) say the same thing. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, ServingError, type ErrorCode } from '../../../core/errors/registry.ts';

const README = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
/** Rows of the table under "### Errors": codes and the status they state. */
function rows(): { codes: string[]; status: number; retryAfter: boolean }[] {
  const table = README.slice(README.indexOf('| code | status | when |'));
  const lines = table.split('\n').slice(2);
  return lines
    .slice(
      0,
      lines.findIndex((l) => !l.startsWith('|')),
    )
    .map((l) => {
      const [codes, status] = l.split('|').slice(1, 3);
      return {
        codes: [...codes.matchAll(/`([A-Z_]+)`/g)].map((m) => m[1]),
        status: Number(/\d{3}/.exec(status)![0]),
        retryAfter: status.includes('Retry-After'),
      };
    });
}

describe('the README error table', () => {
  it('lists every code of the registry, with the registry’s status', () => {
    const stated = new Map<string, number>();
    for (const r of rows()) for (const c of r.codes) if (c in ERROR_CODES) stated.set(c, r.status);
    for (const [code, { status }] of Object.entries(ERROR_CODES)) expect(stated.get(code), code).toBe(status);
  });

  it('says Retry-After for exactly the codes that carry one (RATE_LIMITED sets its own)', () => {
    const stated = new Set(rows().flatMap((r) => (r.retryAfter ? r.codes : [])));
    const carried = (Object.keys(ERROR_CODES) as ErrorCode[]).filter((c) => new ServingError(c).retryAfterSeconds !== undefined);
    expect([...stated].sort()).toEqual([...carried, 'RATE_LIMITED'].sort());
  });

  it('names only codes the registry has', () => {
    const known = new Set(Object.keys(ERROR_CODES));
    for (const r of rows()) for (const c of r.codes) expect(known.has(c), c).toBe(true);
  });
});
