/**
 * A load generator process: sends `predict` over HTTP, or `submitPrediction` +
 * `predictionResult` over WebSocket, closed-loop (N clients back to back) or open-loop
 * (constant arrival rate; latency counted from the scheduled send time, so a slow server
 * cannot hide its queueing). Prints one JSON line with every latency when done.
 */
import { Agent, request } from 'node:http';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

export interface LoadSpec {
  url: string;
  ws: string;
  model: string;
  rowWidth: number;
  rowsPerRequest: number;
  /** How rows travel: `json` as lists of numbers (`features`/`instances`), `base64` as one FP32 tensor's bytes. */
  encoding: 'json' | 'base64';
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
  /** CPU this generator used (user + system), to show what the load itself costs the machine. */
  cpuMs: number;
}

const spec = JSON.parse(process.argv[2]) as LoadSpec;
const row = () => Array.from({ length: spec.rowWidth }, () => Math.random());
const PREDICT = `query($m: String!, $i: PredictionInput!) { predict(model: $m, input: $i) { batchRows } }`;
const SUBMIT = `mutation($m: String!, $i: PredictionInput!) { submitPrediction(model: $m, input: $i) { id } }`;
const RESULT = `subscription($id: ID!) { predictionResult(id: $id) { status error { code } } }`;

const result: LoadResult = { latencies: [], errors: 0, dropped: 0, codes: {}, elapsedMs: 0, cpuMs: 0 };
const fail = (code: string): void => {
  result.errors++;
  result.codes[code] = (result.codes[code] ?? 0) + 1;
};

const ws =
  spec.transport === 'ws'
    ? createClient({ url: spec.ws, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false, keepAlive: 10_000 })
    : undefined;

function once(query: string, variables: Record<string, unknown>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let value: Record<string, unknown> | undefined;
    ws!.subscribe(
      { query, variables },
      { next: (v) => (value = v as Record<string, unknown>), error: reject, complete: () => resolve(value ?? {}) },
    );
  });
}

// Inputs made up front, so the generator spends its CPU on sending, not on building JSON.
function makeInput(): Record<string, unknown> {
  const rows = Array.from({ length: spec.rowsPerRequest }, row);
  if (spec.encoding === 'base64') {
    const base64 = Buffer.from(Float32Array.from(rows.flat()).buffer).toString('base64');
    return { tensors: [{ name: 'input', shape: [spec.rowsPerRequest, spec.rowWidth], datatype: 'FP32', base64 }] };
  }
  return spec.rowsPerRequest === 1 ? { features: rows[0] } : { instances: rows };
}
const inputs = Array.from({ length: 64 }, makeInput);
const bodies = inputs.map((i) => JSON.stringify({ query: PREDICT, variables: { m: spec.model, i } }));
let next = 0;

// node:http on kept-alive sockets, not fetch: fetch cost the generator more CPU per request than
// the API spent serving it, on the same cores as the server.
const target = new URL(spec.url);
// A socket per request in flight: a shared socket would queue requests in the client, hiding the server's latency.
const agent = new Agent({ keepAlive: true, maxSockets: spec.loop === 'closed' ? spec.concurrency : spec.maxInFlight });
function post(body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function one(): Promise<void> {
  const n = next++ % inputs.length;
  const input = inputs[n];
  if (spec.transport === 'http') {
    const { status, text } = await post(bodies[n]);
    const body = JSON.parse(text) as { errors?: { extensions?: { code?: string } }[] };
    if (status !== 200 || body.errors) throw new Error(body.errors?.[0]?.extensions?.code ?? `HTTP_${status}`);
    return;
  }
  const t = (await once(SUBMIT, { m: spec.model, i: input })) as {
    data?: { submitPrediction?: { id: string } };
    errors?: { extensions?: { code?: string } }[];
  };
  if (!t.data?.submitPrediction) throw new Error(t.errors?.[0]?.extensions?.code ?? 'SUBMIT_FAILED');
  const r = (await once(RESULT, { id: t.data.submitPrediction.id })) as {
    data?: { predictionResult?: { status: string; error?: { code: string } } };
  };
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
const cpu0 = process.cpuUsage();
if (ws) await new Promise<void>((resolve) => ws.on('connected', () => resolve()));
await (spec.loop === 'closed' ? closedLoop() : openLoop());
result.elapsedMs = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
result.cpuMs = (cpu.user + cpu.system) / 1000;
await ws?.dispose();
// Exit once the line is flushed: a pipe takes ~64 KB at once, and exiting earlier cut longer results short.
process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
