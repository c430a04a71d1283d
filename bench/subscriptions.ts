/**
 * Subscriptions at scale: `npm run bench:subs`. One API (`batchline serve`, a child process)
 * and a cpu worker on a private redis-server. For each transport, BENCH_SUBS (10,000)
 * spam-mlp predictions are submitted while the queue is paused (so that they stay open), then
 * one `predictionResult` subscription is opened for each:
 *
 * - `ws`: graphql-ws (the released client), BENCH_WS_CONNECTIONS (100) connections sharing them;
 * - `ws1`: graphql-ws, one connection per subscription (as browsers each hold their own);
 * - `sse`: GraphQL over SSE (yoga's distinct-connections mode), one HTTP connection per stream.
 *
 * It prints the time to open them all (until Redis has every result channel subscribed), the
 * API's resident memory (RSS) and V8 heap used (after a full GC, through the inspector) per
 * open subscription, then resumes the queue and counts the results delivered once, twice or
 * never, with the delay from each record's `finishedAt` to its arrival at the client
 * (p50/p99/max), and finally the heap after every client has closed against the heap before
 * the subscriptions opened. BENCH_SUBS_TRANSPORTS picks transports (`ws,ws1,sse`).
 * BENCH_SUBS_SNAPSHOT=<folder> writes the API's heap snapshots before, while they are held, and after they closed.
 */
import { request } from 'node:http';
import { loadavg } from 'node:os';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { startPrivateRedis } from '../harness/private-redis.ts';
import { spawnCli, listeningPort, startWorker, uniquePrefix } from '../harness/stack.ts';
import { keyspace } from '../core/redis/connection.ts';

const SUBS = Number(process.env.BENCH_SUBS ?? 10_000);
const WS_CONNECTIONS = Number(process.env.BENCH_WS_CONNECTIONS ?? 100);
const TRANSPORTS = (process.env.BENCH_SUBS_TRANSPORTS ?? 'ws,ws1,sse').split(',') as Transport[];
type Transport = 'ws' | 'ws1' | 'sse';

const redisServer = await startPrivateRedis();
const prefix = uniquePrefix('subs');
const common = {
  BATCHLINE_LOG_REQUESTS: 'off',
  BATCHLINE_MAINTENANCE: 'false',
  BATCHLINE_QUEUE_MAX_DEPTH: String(SUBS * 4),
  BATCHLINE_HOST: '127.0.0.1',
  BATCHLINE_PORT: '0',
};
const worker = await startWorker('cpu', { redisUrl: redisServer.url, prefix, env: common });
const api = await spawnCli(
  ['serve'],
  { redisUrl: redisServer.url, prefix, env: { ...common, NODE_OPTIONS: '--inspect=127.0.0.1:0', BATCHLINE_LOG_LEVEL: 'info' } },
  /"msg":"API listening"/,
);
const port = listeningPort(api);
const url = `http://127.0.0.1:${port}/graphql`;
const redis = new Redis(redisServer.url);
const keys = keyspace(prefix);
const queue = new Queue(keys.queueName('cpu'), { connection: { url: redisServer.url }, prefix });

/** The API's inspector: a full GC, then process.memoryUsage(). */
const inspectorUrl = /Debugger listening on (ws:\/\/\S+)/.exec(api.output())![1];
const inspector = new WebSocket(inspectorUrl);
await new Promise((r) => inspector.once('open', r));
let inspectorId = 0;
function inspect<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
  const id = ++inspectorId;
  return new Promise((resolve) => {
    const onMessage = (data: WebSocket.RawData): void => {
      const msg = JSON.parse(String(data)) as { id?: number; result: T };
      if (msg.id !== id) return;
      inspector.off('message', onMessage);
      resolve(msg.result);
    };
    inspector.on('message', onMessage);
    inspector.send(JSON.stringify({ id, method, params }));
  });
}
async function memory(): Promise<{ rss: number; heapUsed: number }> {
  for (let k = 0; k < 3; k++) await inspect('HeapProfiler.collectGarbage');
  const r = await inspect<{ result: { value: string } }>('Runtime.evaluate', {
    expression: 'JSON.stringify(process.memoryUsage())',
    returnByValue: true,
  });
  const m = JSON.parse(r.result.value) as { rss: number; heapUsed: number };
  return { rss: m.rss, heapUsed: m.heapUsed };
}

const SNAPSHOT_DIR = process.env.BENCH_SUBS_SNAPSHOT;
async function snapshot(name: string): Promise<void> {
  if (!SNAPSHOT_DIR) return;
  await inspect('Runtime.evaluate', {
    expression: `process.getBuiltinModule('v8').writeHeapSnapshot(${JSON.stringify(`${SNAPSHOT_DIR}/${name}.heapsnapshot`)})`,
  });
}

const KiB = 1024;
const MB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function gql<T>(query: string, variables: Record<string, unknown>): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data?: T; errors?: unknown[] };
  if (!body.data || body.errors) throw new Error(`${res.status} ${JSON.stringify(body).slice(0, 300)}`);
  return body.data;
}

async function pool<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}

const SUBMIT = 'mutation($i: PredictionInput!) { submitPrediction(model: "spam-mlp", input: $i) { id } }';
const RESULT = 'subscription($id: ID!) { predictionResult(id: $id) { id status } }';

/** Redis's count of this run's result channels subscribed: every watch is set up when it is SUBS. */
async function channelsSubscribed(): Promise<number> {
  return ((await redis.pubsub('CHANNELS', `${prefix}:result:*`)) as string[]).length;
}

interface Run {
  received: Map<string, number[]>;
  close(): Promise<void>;
}

function openWs(ids: string[], connections: number): Run {
  const received = new Map<string, number[]>(ids.map((id) => [id, []]));
  const clients: Client[] = Array.from({ length: connections }, () =>
    createClient({ url: url.replace('http', 'ws'), webSocketImpl: WebSocket, retryAttempts: 0, lazy: true, keepAlive: 0 }),
  );
  ids.forEach((id, i) => {
    clients[i % connections].subscribe(
      { query: RESULT, variables: { id } },
      { next: () => received.get(id)!.push(Date.now()), error: () => {}, complete: () => {} },
    );
  });
  return { received, close: async () => void (await Promise.all(clients.map((c) => c.dispose()))) };
}

/**
 * One SSE stream per id, each on its own connection, opened 64 at a time (a lane opens its next
 * once the last one's response began): 10,000 connects at once overflow the listen backlog,
 * and the retried SYNs, not the server, then decide the open time.
 */
function openSse(ids: string[]): Run & { errors: () => number } {
  const received = new Map<string, number[]>(ids.map((id) => [id, []]));
  const requests: ReturnType<typeof request>[] = [];
  let errors = 0;
  const open = (id: string): Promise<void> =>
    new Promise((opened) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path: '/graphql',
          method: 'POST',
          agent: false,
          headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        },
        (res) => {
          opened();
          res.setEncoding('utf8');
          let buf = '';
          res.on('data', (chunk: string) => {
            buf += chunk;
            let at;
            while ((at = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, at);
              buf = buf.slice(at + 2);
              if (/^event: next$/m.test(block)) received.get(id)!.push(Date.now());
            }
          });
          res.on('error', () => {});
        },
      );
      req.on('error', () => {
        errors++;
        opened();
      });
      req.end(JSON.stringify({ query: RESULT, variables: { id } }));
      requests.push(req);
    });
  void pool(ids.length, 64, (i) => open(ids[i]));
  return { received, errors: () => errors, close: async () => requests.forEach((r) => r.destroy()) };
}

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN;
}

async function bench(transport: Transport): Promise<void> {
  await queue.pause();
  const ids = await pool(SUBS, 64, async () => {
    const features = Array.from({ length: 64 }, () => Math.random());
    return (await gql<{ submitPrediction: { id: string } }>(SUBMIT, { i: { features } })).submitPrediction.id;
  });
  await sleep(1000);
  const before = await memory();
  await snapshot(`${transport}-before`);
  const t0 = Date.now();
  const run = transport === 'sse' ? openSse(ids) : openWs(ids, transport === 'ws1' ? SUBS : Math.min(WS_CONNECTIONS, SUBS));
  let open = 0;
  while ((open = await channelsSubscribed()) < SUBS && Date.now() - t0 < 120_000) await sleep(100);
  const openMs = Date.now() - t0;
  await sleep(1000);
  const held = await memory();
  await snapshot(`${transport}-held`);

  await queue.resume();
  const t1 = Date.now();
  const all = (): boolean => [...run.received.values()].every((t) => t.length > 0);
  while (!all() && Date.now() - t1 < 120_000) await sleep(100);
  await sleep(2000); // a second delivery would come now
  const counts = { once: 0, twice: 0, never: 0 };
  for (const t of run.received.values()) counts[t.length === 0 ? 'never' : t.length === 1 ? 'once' : 'twice']++;
  const clientErrors = 'errors' in run ? (run as { errors: () => number }).errors() : 0;

  // Delay: from the record's finishedAt (the worker's clock, this machine) to the client's receipt.
  const delays: number[] = [];
  const idList = [...run.received.keys()];
  await pool(Math.ceil(idList.length / 10), 16, async (k) => {
    const part = idList.slice(k * 10, k * 10 + 10);
    // One document for every batch (variables): distinct documents would fill the API's parse cache.
    const q = `query(${part.map((_, j) => `$i${j}: ID!`).join(', ')}) { ${part.map((_, j) => `p${j}: prediction(id: $i${j}) { finishedAt }`).join(' ')} }`;
    const data = await gql<Record<string, { finishedAt: string | null }>>(q, Object.fromEntries(part.map((id, j) => [`i${j}`, id])));
    part.forEach((id, j) => {
      const at = run.received.get(id)![0];
      const fin = data[`p${j}`].finishedAt;
      if (at !== undefined && fin) delays.push(at - Date.parse(fin));
    });
  });
  delays.sort((a, b) => a - b);

  await run.close();
  await sleep(3000);
  const after = await memory();
  await snapshot(`${transport}-closed`);
  const per = (a: number, b: number): string => `${((b - a) / SUBS / KiB).toFixed(2)} KiB`;
  const label =
    transport === 'ws'
      ? `ws (${Math.min(WS_CONNECTIONS, SUBS)} connections)`
      : transport === 'ws1'
        ? 'ws (1 connection each)'
        : 'sse (1 connection each)';
  console.log(
    `${label}: ${SUBS} subscriptions open in ${openMs} ms (${open} channels)\n` +
      `  API per open subscription: RSS ${per(before.rss, held.rss)}, heap ${per(before.heapUsed, held.heapUsed)}` +
      ` (RSS ${(before.rss / MB).toFixed(0)} -> ${(held.rss / MB).toFixed(0)} MB, heap ${(before.heapUsed / MB).toFixed(1)} -> ${(held.heapUsed / MB).toFixed(1)} MB)\n` +
      `  delivered once ${counts.once}, twice ${counts.twice}, never ${counts.never} (client connection errors ${clientErrors}); delay ms p50 ${percentile(delays, 50)} p99 ${percentile(delays, 99)} max ${delays.at(-1)}\n` +
      `  load average ${loadavg()[0].toFixed(1)}; after close: heap ${(after.heapUsed / MB).toFixed(1)} MB = ${((after.heapUsed / before.heapUsed) * 100).toFixed(1)}% of before, RSS ${(after.rss / MB).toFixed(0)} MB`,
  );
}

try {
  console.log(
    `bench:subs: ${SUBS} predictionResult subscriptions per transport, spam-mlp, one API process (node ${process.version}, load average ${loadavg()[0].toFixed(1)})`,
  );
  for (const t of TRANSPORTS) await bench(t);
} finally {
  inspector.close();
  await queue.close();
  redis.disconnect();
  await api.stop();
  await worker.stop();
  await redisServer.stop();
}
