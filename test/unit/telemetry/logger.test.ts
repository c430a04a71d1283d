/** When stdout gets human-readable lines (log.format), and what a logger given a destination writes there. */
import { describe, expect, it } from 'vitest';
import { createLogger, prettyLogs } from '../../../core/telemetry/logger.ts';

describe('log.format', () => {
  it('auto is pretty on a terminal and JSON otherwise; json and pretty are what they say', () => {
    expect([prettyLogs('auto', true), prettyLogs('auto', false)]).toEqual([true, false]);
    expect([prettyLogs('json', true), prettyLogs('json', false)]).toEqual([false, false]);
    expect([prettyLogs('pretty', true), prettyLogs('pretty', false)]).toEqual([true, true]);
    expect(prettyLogs(undefined, true)).toBe(true);
  });

  it('a destination gets JSON lines with the base fields, whatever the format', () => {
    let out = '';
    const log = createLogger(
      { level: 'info', file: '', retentionDays: 7, format: 'pretty' },
      { process: 'api' },
      { write: (s: string) => void (out += s) },
    );
    log.info({ port: 1 }, 'hello');
    expect(JSON.parse(out)).toMatchObject({ level: 30, process: 'api', port: 1, msg: 'hello' });
  });
});
