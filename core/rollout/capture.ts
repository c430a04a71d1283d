/**
 * Payload capture: a sampled share of a model's requests (its `capture.percent`), each
 * written with its outputs, model, version, request id, trace id and timings to a Redis
 * Stream of the model's (`<prefix>:capture:{<model>}`), for retraining and audit.
 *
 * It never blocks or fails a request: the write is not awaited, and one that cannot be made
 * is dropped and counted (`batchline_capture_total{outcome}`): `too-large` (its JSON over
 * `capture.maxBytes`), `backlog` (this process already has CAPTURE_BACKLOG writes waiting on a
 * slow Redis) or `redis-error`. The stream is capped by length on every write (XADD MAXLEN ~,
 * which trims whole stream nodes, so it may hold up to one node over the cap) and by age (XTRIM
 * MINID ~ and EXPIRE, at most once a minute per model and process).
 *
 * Inputs are kept as a client sends them (`PredictionInput`): tensors as base64 of their
 * little-endian bytes, text as text, so a captured request can be sent again as it is.
 * `batchline capture export` writes them out as JSON lines, each a CloudEvent in structured
 * mode (the envelope KServe's payload logger uses), one per request.
 */
import type { Keyspace, RedisClient } from '../redis/connection.ts';
import type { NormalizedInput, PredictionInput } from '../prediction/input.ts';
import type { PredictionResult } from '../prediction/record.ts';
import { encodeBase64Tensor } from '../tensor/codec.ts';
import type { CaptureSpec } from '../models/rollout-policy.ts';
import type { RolloutMetrics } from './metrics.ts';

/** Capture writes one process may have waiting on Redis before it drops new ones. */
export const CAPTURE_BACKLOG = 64;
/** How often (at most) one process trims a model's stream by age and renews its TTL. */
const AGE_TRIM_EVERY_MS = 60_000;

/** What one captured request holds, as stored. */
export interface CapturedRequest {
  model: string;
  version: string;
  /** stable, canary or named (the client asked for the version). */
  route: string;
  requestId: string;
  traceId?: string;
  /** Epoch ms of the answer. */
  at: number;
  input: PredictionInput;
  outputs: PredictionResult['outputs'];
  predictions: PredictionResult['predictions'];
  timings: PredictionResult['timings'];
  cached: boolean;
}

/** The input as a client would send it again. */
export function replayableInput(input: NormalizedInput): PredictionInput {
  if (input.kind === 'text') return { texts: input.texts };
  return {
    tensors: input.tensors.map((t) => ({
      name: t.name,
      datatype: t.datatype,
      shape: t.shape,
      base64: encodeBase64Tensor(t.datatype, t.data),
    })),
  };
}

export interface CaptureDeps {
  redis: RedisClient;
  keys: Keyspace;
  metrics: RolloutMetrics;
  random?: () => number;
}

export class PayloadCapture {
  private readonly deps: CaptureDeps;
  private readonly random: () => number;
  private pending = 0;
  private readonly trimmedAt = new Map<string, number>();

  constructor(deps: CaptureDeps) {
    this.deps = deps;
    this.random = deps.random ?? Math.random;
  }

  /** Whether this request is one of the sampled share (decided before anything is encoded). */
  sampled(spec: CaptureSpec): boolean {
    return spec.percent > 0 && this.random() * 100 < spec.percent;
  }

  /** Writes one capture without waiting for it; returns at once whatever happens. */
  write(spec: CaptureSpec, c: Omit<CapturedRequest, 'input'> & { input: NormalizedInput }): void {
    const { redis, keys, metrics } = this.deps;
    if (this.pending >= CAPTURE_BACKLOG) return void metrics.captured.inc({ model: c.model, outcome: 'backlog' });
    const json = JSON.stringify({ ...c, input: replayableInput(c.input) } satisfies CapturedRequest);
    if (Buffer.byteLength(json) > spec.maxBytes) return void metrics.captured.inc({ model: c.model, outcome: 'too-large' });
    const key = keys.capture(c.model);
    this.pending++;
    metrics.capturePending.inc();
    redis
      .xadd(key, 'MAXLEN', '~', spec.maxEntries, '*', 'e', json)
      .then(
        () => {
          metrics.captured.inc({ model: c.model, outcome: 'written' });
          this.trimByAge(key, spec);
        },
        () => metrics.captured.inc({ model: c.model, outcome: 'redis-error' }),
      )
      .finally(() => {
        this.pending--;
        metrics.capturePending.dec();
      });
  }

  private trimByAge(key: string, spec: CaptureSpec): void {
    const now = Date.now();
    if (now - (this.trimmedAt.get(key) ?? 0) < AGE_TRIM_EVERY_MS) return;
    this.trimmedAt.set(key, now);
    const { redis } = this.deps;
    redis.xtrim(key, 'MINID', '~', now - spec.ttlSeconds * 1000).catch(() => {});
    redis.expire(key, spec.ttlSeconds).catch(() => {});
  }
}

/** One captured request as read back, with its stream id (its place and time). */
export interface CaptureEntry extends CapturedRequest {
  id: string;
}

/**
 * Captures of `model` from `since` (epoch ms) or after the entry `after`, oldest first, at
 * most `count`; `next` continues from the last one when more may follow.
 */
export async function readCaptures(
  redis: RedisClient,
  keys: Keyspace,
  model: string,
  o: { since?: number; after?: string; count: number },
): Promise<{ entries: CaptureEntry[]; next?: string }> {
  const start = o.after ? `(${o.after}` : o.since !== undefined ? String(Math.max(0, Math.floor(o.since))) : '-';
  const rows = await redis.xrange(keys.capture(model), start, '+', 'COUNT', o.count);
  const entries: CaptureEntry[] = [];
  for (const [id, fields] of rows) {
    const at = fields.indexOf('e');
    if (at < 0 || at % 2 !== 0) continue;
    try {
      entries.push({ id, ...(JSON.parse(fields[at + 1]) as CapturedRequest) });
    } catch {
      // An entry something else wrote: not ours to export.
    }
  }
  return { entries, next: rows.length === o.count ? rows.at(-1)![0] : undefined };
}

/** A capture as a CloudEvent (structured mode, JSON): the line `batchline capture export` writes. */
export function toCloudEvent(e: CaptureEntry): Record<string, unknown> {
  return {
    specversion: '1.0',
    type: 'io.batchline.inference.capture',
    source: `/batchline/models/${encodeURIComponent(e.model)}`,
    id: e.id,
    time: new Date(e.at).toISOString(),
    datacontenttype: 'application/json',
    model: e.model,
    modelversion: e.version,
    route: e.route,
    requestid: e.requestId,
    ...(e.traceId ? { traceid: e.traceId } : {}),
    data: { input: e.input, outputs: e.outputs, predictions: e.predictions, timings: e.timings, cached: e.cached },
  };
}
