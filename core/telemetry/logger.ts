/**
 * pino logs to stdout: JSON lines, or human-readable ones (pino-pretty) when stdout is a
 * terminal (`log.format`); optionally also JSON to a file rotated daily keeping
 * `retentionDays` days. API keys and raw inputs are never logged.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { pino, type DestinationStream, type Logger, type TransportTargetOptions } from 'pino';
import type { BatchlineConfig } from '../config/settings.ts';

export type { Logger };

/** What the API knows of the request it is serving; filled in as the request goes. */
export interface RequestScope {
  requestId: string;
  /** `query predict`, `mutation submitPrediction`, ... once the operation is known. */
  operation?: string;
  model?: string;
  /** `extensions.code` of the first error of the answer, if any. */
  code?: string;
}

/**
 * The request being served, for every line logged while serving it: each log line written
 * inside `requestScope.run(...)` carries its `requestId`, whichever module writes it.
 */
export const requestScope = new AsyncLocalStorage<RequestScope>();
const withRequestId = (): Record<string, unknown> => {
  const scope = requestScope.getStore();
  return scope ? { requestId: scope.requestId } : {};
};

/**
 * Where an API key could sit in a logged object: request headers (the default header and
 * Authorization, in the shapes node, fetch and graphql-ws give them), graphql-ws
 * `connection_init` payloads, and the configured key hashes. batchline itself logs none of
 * these; this is the safety net.
 */
export const REDACTED = [
  'apiKey',
  '*.apiKey',
  'headers.authorization',
  'headers["x-api-key"]',
  '*.headers.authorization',
  '*.headers["x-api-key"]',
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'request.headers.authorization',
  'request.headers["x-api-key"]',
  'connectionParams',
  '*.connectionParams',
  'auth.keys',
  '*.auth.keys',
];

/** Whether stdout gets human-readable lines: `pretty`, or `auto` on a terminal. */
export function prettyLogs(format: BatchlineConfig['log']['format'] | undefined, stdoutIsTerminal: boolean): boolean {
  return format === 'pretty' || ((format ?? 'auto') === 'auto' && stdoutIsTerminal);
}

/**
 * pino-pretty on stdout, in pino's transport thread: one line per record (time, level, the
 * process it came from, the message, then its fields), colours on a terminal only.
 */
function prettyTarget(level: string, colorize: boolean): TransportTargetOptions {
  return {
    target: 'pino-pretty',
    level,
    options: {
      destination: 1,
      colorize,
      singleLine: true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,process',
      messageFormat: '{if process}{process}: {end}{msg}',
    },
  };
}

/**
 * The process's logger: JSON lines on stdout, or pretty ones (`log.format`); with `log.file`,
 * JSON to a daily-rotated file too. `destination` replaces stdout with a JSON stream (tests
 * read what a server logs without a process of its own).
 */
export function createLogger(
  config: Pick<BatchlineConfig['log'], 'level' | 'file' | 'retentionDays'> & Partial<Pick<BatchlineConfig['log'], 'format'>>,
  base: Record<string, unknown> = {},
  destination?: DestinationStream,
): Logger {
  const options = {
    level: config.level,
    base: { pid: process.pid, ...base },
    redact: { paths: REDACTED, censor: '[redacted]' },
    mixin: withRequestId,
  };
  if (destination) return pino(options, destination);
  const terminal = process.stdout.isTTY === true;
  const pretty = prettyLogs(config.format, terminal);
  if (!config.file)
    return pretty
      ? pino(options, pino.transport(prettyTarget(config.level, terminal)))
      : pino(options, pino.destination({ dest: 1, sync: false }));
  const transport = pino.transport({
    targets: [
      pretty ? prettyTarget(config.level, terminal) : { target: 'pino/file', options: { destination: 1 }, level: config.level },
      {
        target: 'pino-roll',
        options: {
          file: config.file,
          frequency: 'daily',
          mkdir: true,
          dateFormat: 'yyyy-MM-dd',
          limit: { count: Math.max(0, config.retentionDays - 1) },
        },
        level: config.level,
      },
    ],
  });
  return pino(options, transport);
}
