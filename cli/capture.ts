/**
 * `batchline capture export --model M [--since T] [--format jsonl] [--out FILE]`: a model's
 * captured requests (core/rollout/capture.ts), oldest first, one CloudEvent (JSON) per line,
 * read straight from Redis with the server's configuration (`--config`, `--redis`, or the
 * BATCHLINE_* environment), so it takes Redis credentials; over the API, the admin-only
 * `capturedPayloads` query gives the same lines.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { loadConfig } from '../core/config/settings.ts';
import { createRedis, keysOf, whenReady } from '../core/redis/connection.ts';
import { readCaptures, toCloudEvent } from '../core/rollout/capture.ts';

const USAGE = 'usage: batchline capture export --model M [--since T] [--format jsonl] [--out FILE] [--config FILE] [--redis URL]';
/** Entries read per XRANGE. */
const PAGE = 500;
const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since`: an ISO time, epoch milliseconds, or a span back from now (`30s`, `15m`, `2h`, `7d`). */
export function parseSince(text: string, now = Date.now()): number {
  const span = /^(\d+)([smhd])$/.exec(text);
  if (span) return now - Number(span[1]) * UNITS[span[2]];
  if (/^\d+$/.test(text)) return Number(text);
  const ms = Date.parse(text);
  if (!Number.isFinite(ms)) throw new Error(`--since: expected an ISO time, epoch milliseconds or a span like 15m, 2h, 7d; got '${text}'`);
  return ms;
}

async function write(out: NodeJS.WritableStream | WriteStream, line: string): Promise<void> {
  if (!out.write(line)) await once(out, 'drain');
}

export async function runCaptureCli(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  const { values } = parseArgs({
    args: rest,
    options: {
      model: { type: 'string' },
      since: { type: 'string' },
      format: { type: 'string', default: 'jsonl' },
      out: { type: 'string' },
      config: { type: 'string' },
      redis: { type: 'string' },
    },
    strict: true,
  });
  if (verb !== 'export' || !values.model) {
    console.error(USAGE);
    return 2;
  }
  if (values.format !== 'jsonl') {
    console.error(`--format: only jsonl is written, got '${values.format}'`);
    return 2;
  }
  let since: number | undefined;
  try {
    since = values.since === undefined ? undefined : parseSince(values.since);
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  const config = loadConfig({ file: values.config, overrides: values.redis ? { redis: { url: values.redis } } : undefined });
  const redis = createRedis(config.redis, 'subscriber');
  const out = values.out ? createWriteStream(values.out) : process.stdout;
  let written = 0;
  try {
    await whenReady(redis, 5000);
    const keys = keysOf(redis, config.redis.prefix);
    let page = await readCaptures(redis, keys, values.model, { since, count: PAGE });
    for (;;) {
      for (const e of page.entries) {
        await write(out, `${JSON.stringify(toCloudEvent(e))}\n`);
        written++;
      }
      if (!page.next) break;
      page = await readCaptures(redis, keys, values.model, { after: page.next, count: PAGE });
    }
  } finally {
    redis.disconnect();
    if (out !== process.stdout) {
      (out as WriteStream).end();
      await once(out, 'close');
    } else {
      // The command ends with process.exit, which would cut off what a pipe has not taken yet.
      await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
    }
  }
  console.error(`exported ${written} captured request${written === 1 ? '' : 's'} of ${values.model}`);
  return 0;
}
