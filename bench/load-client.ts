/**
 * A load generator process: sends `predict` over HTTP, or `submitPrediction` +
 * `predictionResult` over WebSocket, closed-loop (N clients back to back) or open-loop
 * (constant arrival rate; latency counted from the scheduled send time, so a slow server
 * cannot hide its queueing). Prints one JSON line with every latency when done.
 */
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

export interface LoadSpec {
  url: string;
  ws: string;
  model: string;
  rowWidth: number;
  rowsPerRequest: number;
  transport: 'http' | 'ws';
  loop: 'closed' | 'open';
  /** Closed loop: concurrent clients. */
  concurrency: number;
  /** Open loop: requests per second. */
  rate: number;
  durationMs: number;
  /** Open loop: most requests in flight before new ones count as dropped. */
  maxInFlight: number;
}

export interface LoadResult {
  latencies: number[];
  errors: number;
  dropped: number;
  codes: Record<string, number>;
  elapsedMs: number;
}

const spec = JSON.parse(process.argv[2]) as LoadSpec;
const row = () => Array.from({ length: spec.rowWidth }, () => Math.random());
const PREDICT = `query($m: String!, $i: PredictionInput!) { predict(model: $m, input: $i) { batchRows } }`;
const SUBMIT = `mutation($m: String!, $i: PredictionInput!) { submitPrediction(model: $m, input: $i) { id } }`;
const RESULT = `subscription($id: ID!) { predictionResult(id: $id) { status error { code } } }`;

const result: LoadResult = { latencies: [], errors: 0, dropped: 0, codes: {}, elapsedMs: 0 };
const fail = (code: string): void => {
  result.errors++;
  result.codes[code] = (result.codes[code] ?? 0) + 1;
};

const ws = spec.transport === 'ws' ? createClient({ url: spec.ws, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false, keepAlive: 10_000 }) : undefined;

function once(query: string, variables: Record<string, unknown>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let value: Record<string, unknown> | undefined;
    ws!.subscribe({ query, variables }, { next: (v) => (value = v as Record<string, unknown>), error: reject, complete: () => resolve(value ?? {}) });
  });
}

// Inputs made up front, so the generator spends its CPU on sending, not on building JSON.
const inputs = Array.from({ length: 64 }, () => (spec.rowsPerRequest === 1 ? { features: row() } : { instances: Array.from({ length: spec.rowsPerRequest }, row) }));
const bodies = inputs.map((i) => JSON.stringify({ query: PREDICT, variables: { m: spec.model, i } }));
let next = 0;

async function one(): Promise<void> {
  const n = next++ % inputs.length;
  const input = inputs[n];
  if (spec.transport === 'http') {
    const res = await fetch(spec.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[n] });
    const body = (await res.json()) as { errors?: { extensions?: { code?: string } }[] };
    if (res.status !== 200 || body.errors) throw new Error(body.errors?.[0]?.extensions?.code ?? `HTTP_${res.status}`);
    return;
  }
  const t = (await once(SUBMIT, { m: spec.model, i: input })) as { data?: { submitPrediction?: { id: string } }; errors?: { extensions?: { code?: string } }[] };
  if (!t.data?.submitPrediction) throw new Error(t.errors?.[0]?.extensions?.code ?? 'SUBMIT_FAILED');
  const r = (await once(RESULT, { id: t.data.submitPrediction.id })) as { data?: { predictionResult?: { status: string; error?: { code: string } } } };
  if (r.data?.predictionResult?.status !== 'COMPLETED') throw new Error(r.data?.predictionResult?.error?.code ?? 'RESULT_FAILED');
}

async function closedLoop(): Promise<void> {
  const end = performance.now() + spec.durationMs;
  await Promise.all(
    Array.from({ length: spec.concurrency }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        try {
          await one();
          result.latencies.push(performance.now() - t0);
        } catch (e) {
          fail((e as Error).message);
        }
      }
    }),
  );
}

async function openLoop(): Promise<void> {
  const start = performance.now();
  const interval = 1000 / spec.rate;
  const total = Math.floor((spec.durationMs / 1000) * spec.rate);
  let sent = 0;
  let inFlight = 0;
  const pending: Promise<void>[] = [];
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now();
      while (sent < total && start + sent * interval <= now) {
        const scheduled = start + sent * interval;
        sent++;
        if (inFlight >= spec.maxInFlight) {
          result.dropped++;
          continue;
        }
        inFlight++;
        pending.push(
          one().then(
            () => {
              inFlight--;
              result.latencies.push(performance.now() - scheduled);
            },
            (e: Error) => {
              inFlight--;
              fail(e.message);
            },
          ),
        );
      }
      if (sent >= total) resolve();
      else setTimeout(tick, Math.max(0, Math.min(5, start + sent * interval - performance.now())));
    };
    tick();
  });
  await Promise.all(pending);
}

const t0 = performance.now();
if (ws) await new Promise<void>((resolve) => ws.on('connected', () => resolve()));
await (spec.loop === 'closed' ? closedLoop() : openLoop());
result.elapsedMs = performance.now() - t0;
await ws?.dispose();
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
