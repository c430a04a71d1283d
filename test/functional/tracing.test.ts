/**
 * OpenTelemetry tracing across the API, the queue and the workers, as a collector sees it: a
 * real OTLP/HTTP receiver (the exporter's JSON protocol) collects the spans of a real stack,
 * an API and two workers (cpu and gpu pools) started as `batchline serve` / `worker`,
 * configured by the standard OTEL_* variables and BATCHLINE_TRACING.
 */
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest';
import { gql, sseCollect, wsClient } from '../support/clients.ts';
import { dropPrefix, listeningPort, spawnCli, startWorker, uniquePrefix, type Child } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.ts';
import { LINEAR_CONFIG, addModel, linearOnnx, tempRepository } from '../support/model-repo.ts';
import { REPO_MODELS } from '../../harness/stack.ts';

const redisUrl = inject('redisUrl');
const SERVER = 2;
const PRODUCER = 4;
const CONSUMER = 5;

/** Ten requests of one row fill exactly one gpu batch: it closes `full` on the tenth, whatever the timing. */
const BATCH = 10;
// A long delay and SLO, so the batch closes on its row limit alone (models.overrides names a file).
const OVERRIDES = join(mkdtempSync(join(tmpdir(), 'batchline-trace-')), 'models.yaml');
writeFileSync(OVERRIDES, `mlp-bench: { pool: gpu, batching: { policy: fixed, maxBatchSize: ${BATCH}, maxDelayMs: 5000, sloMs: 10000 } }\n`);

// The repository's models, and `ab`: version 2 shadows version 1 on every request, and every request is captured.
const MODELS = tempRepository();
for (const m of ['name-gender', 'mlp-bench']) cpSync(join(REPO_MODELS, m), join(MODELS, m), { recursive: true });
for (const v of ['1', '2'])
  addModel(MODELS, 'ab', v, linearOnnx(), {
    ...LINEAR_CONFIG,
    rollout: { stable: '1', shadow: { version: '2', percent: 100, timeoutMs: 30_000 } },
    capture: { percent: 100 },
  });

function tracingEnv(receiver: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    BATCHLINE_TRACING: 'true',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    // Export within 50 ms of a span's end, so a test waits little for what it checks.
    OTEL_BSP_SCHEDULE_DELAY: '50',
    BATCHLINE_MODEL_OVERRIDES: OVERRIDES,
    ...extra,
  };
}

async function startStack(prefix: string, env: Record<string, string>, pools: ('cpu' | 'gpu')[]): Promise<{ url: string; procs: Child[] }> {
  const opts = { redisUrl, prefix, models: MODELS, env: { BATCHLINE_MAINTENANCE: 'false', BATCHLINE_LOG_LEVEL: 'debug', ...env } };
  const procs = await Promise.all(pools.map((p) => startWorker(p, opts)));
  const api = await spawnCli(
    ['serve', '--port', '0'],
    { ...opts, env: { ...opts.env, BATCHLINE_HOST: '127.0.0.1' } },
    /"msg":"API listening"/,
  );
  procs.push(api);
  return { url: `http://127.0.0.1:${listeningPort(api)}/graphql`, procs };
}

const features = (seed: number): number[] => Array.from({ length: 512 }, (_, i) => Math.sin(seed * 1000 + i));
const PREDICT_MLP =
  'query($f: [Float!]!) { predict(model: "mlp-bench", input: { features: $f }) { predictions { label } timings { batchRows } } }';

describe('tracing through the queue', () => {
  let receiver: OtlpReceiver;
  let stack: { url: string; procs: Child[] };
  const prefix = uniquePrefix('trace');

  const spansOf = (traceId: string): ReceivedSpan[] => receiver.spans.filter((s) => s.traceId === traceId);
  const one = (spans: ReceivedSpan[], name: string | RegExp): ReceivedSpan => {
    const found = spans.filter((s) => (typeof name === 'string' ? s.name === name : name.test(s.name)));
    expect(
      found.map((s) => s.name),
      `one span named ${name} in ${spans.map((s) => s.name).join(', ')}`,
    ).toHaveLength(1);
    return found[0];
  };
  const traceIdOf = (traceparent: string | null): string => {
    expect(traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    return traceparent!.split('-')[1];
  };

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    stack = await startStack(prefix, tracingEnv(receiver.endpoint), ['cpu', 'gpu']);
  });

  afterAll(async () => {
    await Promise.all((stack?.procs ?? []).map((p) => p.stop()));
    await receiver?.close();
    await dropPrefix(redisUrl, prefix);
  });

  it('a synchronous predict is one trace across the API and a worker, each span under the one that caused it', async () => {
    const r = await gql<{ predict: { label: string; timings: Record<string, number> } }>(
      stack.url,
      '{ predict(model: "name-gender", input: { text: "Philippa" }) { label timings { queueMs batchWaitMs batchRows coldStartMs inferenceMs totalMs } } }',
    );
    expect(r.body.errors).toBeUndefined();
    const traceId = traceIdOf(r.headers.get('traceparent'));
    const names = [
      'POST /graphql',
      'predict name-gender',
      'edge batch name-gender',
      'queued',
      'process',
      'inference batch',
      'onnxruntime run',
      'reply',
    ];
    await until(
      () => names.every((n) => spansOf(traceId).some((s) => s.name.startsWith(n))),
      () =>
        `spans ${names.join(', ')}; have ${spansOf(traceId)
          .map((s) => s.name)
          .join(', ')}`,
    );
    const spans = spansOf(traceId);
    const http = one(spans, 'POST /graphql');
    const predict = one(spans, 'predict name-gender');
    const edge = one(spans, 'edge batch name-gender');
    const send = one(spans, /^send /);
    const queued = one(spans, /^queued /);
    const processed = one(spans, /^process /);
    const batch = one(spans, 'inference batch name-gender');
    const run = one(spans, 'onnxruntime run name-gender');
    const reply = one(spans, 'reply name-gender');
    // The tree: who caused what.
    expect(http.parentSpanId).toBeUndefined();
    expect(http.kind).toBe(SERVER);
    expect(predict.parentSpanId).toBe(http.spanId);
    expect(edge.parentSpanId).toBe(predict.spanId);
    expect(send.parentSpanId).toBe(edge.spanId);
    expect(send.kind).toBe(PRODUCER);
    expect(queued.parentSpanId).toBe(send.spanId);
    expect(processed.parentSpanId).toBe(send.spanId);
    expect(processed.kind).toBe(CONSUMER);
    expect(batch.parentSpanId).toBe(processed.spanId);
    expect(run.parentSpanId).toBe(batch.spanId);
    expect(reply.parentSpanId).toBe(processed.spanId);
    // Two processes, one trace.
    expect(new Set([http, predict, edge, send].map((s) => s.service))).toEqual(new Set(['batchline-api']));
    expect(new Set([queued, processed, batch, run, reply].map((s) => s.service))).toEqual(new Set(['batchline-worker']));
    // In time: the queue wait ends where the processing starts; the run lies within its batch.
    expect(queued.endMs).toBeCloseTo(processed.startMs, 0);
    expect(run.startMs).toBeGreaterThanOrEqual(batch.startMs - 1);
    expect(run.endMs).toBeLessThanOrEqual(batch.endMs + 1);
    // Attributes: OpenTelemetry's where a convention exists, batchline.* otherwise.
    expect(http.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.response.status_code': 200,
      'batchline.model': 'name-gender',
    });
    expect(predict.attributes).toMatchObject({
      'batchline.model': 'name-gender',
      'batchline.version': '1',
      'batchline.cached': false,
      'batchline.rows': 1,
    });
    expect(send.attributes).toMatchObject({ 'messaging.system': 'bullmq', 'messaging.operation.type': 'send', 'batchline.priority': 1 });
    expect(processed.attributes).toMatchObject({
      'messaging.operation.type': 'process',
      'batchline.model': 'name-gender',
      'batchline.attempt': 1,
    });
    expect(batch.attributes).toMatchObject({ 'batchline.rows': 1, 'batchline.batch.policy': 'fixed', 'batchline.batch.limit': 1 });
    expect(batch.attributes['batchline.batch.close_reason']).toMatch(/^(full|timeout|deadline|idle)$/);
    expect(batch.links.map((l) => l.spanId)).toEqual([predict.spanId]);
    // The answer says where its time went.
    const t = r.body.data!.predict.timings;
    expect(Object.keys(t).sort()).toEqual(['batchRows', 'batchWaitMs', 'coldStartMs', 'inferenceMs', 'queueMs', 'totalMs']);
    expect(t.batchRows).toBe(1);
    expect(t.coldStartMs).toBe(0);
    for (const k of ['queueMs', 'batchWaitMs', 'inferenceMs']) expect(t[k], k).toBeGreaterThanOrEqual(0);
    expect(t.totalMs).toBeGreaterThanOrEqual(t.inferenceMs);
  });

  it('every log line written while serving a traced request carries its trace and span ids', async () => {
    const r = await gql(stack.url, '{ predict(model: "name-gender", input: { text: "Gwendolyn" }) { label } }', undefined, {
      'x-request-id': 'trace-log-1',
    });
    const traceId = traceIdOf(r.headers.get('traceparent'));
    const worker = stack.procs[0];
    const line = (): Record<string, unknown> | undefined =>
      worker
        .output()
        .split('\n')
        .filter((l) => l.includes('"requestId":"trace-log-1"') && l.includes('"msg":"predicted"'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)[0];
    await until(() => line() !== undefined, 'the worker’s "predicted" line');
    await until(() => spansOf(traceId).some((s) => s.name.startsWith('process ')), 'the process span');
    expect(line()).toMatchObject({ trace_id: traceId, span_id: one(spansOf(traceId), /^process /).spanId });
    const api = stack.procs.at(-1)!;
    // The API's line is written after the answer is sent (pino writes asynchronously to its pipe).
    const request = (): string | undefined =>
      api
        .output()
        .split('\n')
        .find((l) => l.includes('"requestId":"trace-log-1"') && l.includes('"msg":"request"'));
    await until(() => request() !== undefined, 'the API’s "request" line');
    expect(JSON.parse(request()!)).toMatchObject({ trace_id: traceId });
  });

  it('ten concurrent requests that share a batch each link to the same batch span, and it to them', async () => {
    const answers = await Promise.all(
      Array.from({ length: BATCH }, (_, i) =>
        gql<{ predict: { timings: { batchRows: number } } }>(stack.url, PREDICT_MLP, { f: features(i + 1) }),
      ),
    );
    for (const a of answers) expect(a.body.errors).toBeUndefined();
    expect(answers.map((a) => a.body.data!.predict.timings.batchRows)).toEqual(Array(BATCH).fill(BATCH));
    const traceIds = answers.map((a) => traceIdOf(a.headers.get('traceparent')));
    const predictSpans = (): ReceivedSpan[] => traceIds.flatMap((id) => spansOf(id).filter((s) => s.name === 'predict mlp-bench'));
    const batches = (): ReceivedSpan[] =>
      receiver.spans.filter((s) => s.name === 'inference batch mlp-bench' && s.links.some((l) => traceIds.includes(l.traceId)));
    await until(() => predictSpans().length === BATCH && batches().length > 0, 'ten predict spans and their batch span');
    expect(batches()).toHaveLength(1);
    const [batch] = batches();
    expect(batch.attributes).toMatchObject({
      'batchline.rows': BATCH,
      'batchline.requests': BATCH,
      'batchline.batch.close_reason': 'full',
      'batchline.batch.limit': BATCH,
    });
    // The batch links to every request; it sits in the trace of one of them.
    expect(batch.links.map((l) => l.spanId).sort()).toEqual(
      predictSpans()
        .map((s) => s.spanId)
        .sort(),
    );
    expect(traceIds).toContain(batch.traceId);
    // Each job of it (an edge batch of some of the ten) is processed under a span that is the batch's parent or links to it.
    const processes = (): ReceivedSpan[] => receiver.spans.filter((s) => s.name.startsWith('process ') && traceIds.includes(s.traceId));
    const requestsProcessed = (): number => processes().reduce((n, p) => n + Number(p.attributes['batchline.requests']), 0);
    await until(
      () => requestsProcessed() === BATCH,
      () => `process spans covering ${BATCH} requests; have ${requestsProcessed()}`,
    );
    for (const p of processes())
      expect(p.spanId === batch.parentSpanId || p.links.some((l) => l.spanId === batch.spanId), p.spanId).toBe(true);
    // ... and each request's own span is in an edge batch's links, or is that edge batch's parent.
    const edges = receiver.spans.filter((s) => s.name === 'edge batch mlp-bench' && traceIds.includes(s.traceId));
    for (const p of predictSpans())
      expect(
        edges.some((e) => e.parentSpanId === p.spanId || e.links.some((l) => l.spanId === p.spanId)),
        p.spanId,
      ).toBe(true);
  });

  it('latency histograms carry the trace of a sampled observation as an OpenMetrics exemplar', async () => {
    const r = await gql(stack.url, '{ predict(model: "name-gender", input: { text: "Imogen" }) { label } }');
    const traceId = traceIdOf(r.headers.get('traceparent'));
    const accept = 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5';
    const body = await (await fetch(stack.url.replace('/graphql', '/metrics'), { headers: { accept } })).text();
    const exemplars = [
      ...body.matchAll(/^batchline_latency_seconds_bucket\{[^}]*phase="total"[^}]*\} \d+ # \{([^}]*)\} ([\d.e-]+) [\d.]+$/gm),
    ];
    expect(exemplars.map((m) => m[1])).toContainEqual(expect.stringContaining(`trace_id="${traceId}"`));
    // Prometheus text has no exemplars.
    expect(await (await fetch(stack.url.replace('/graphql', '/metrics'))).text()).not.toMatch(/ # \{trace_id=/);
  });

  it('continues a client’s traceparent, and answers with its own', async () => {
    const clientTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const clientSpan = '00f067aa0ba902b7';
    const r = await gql(stack.url, '{ predict(model: "name-gender", input: { text: "Cordelia" }) { label } }', undefined, {
      traceparent: `00-${clientTrace}-${clientSpan}-01`,
      tracestate: 'vendor=abc',
    });
    expect(r.body.errors).toBeUndefined();
    expect(traceIdOf(r.headers.get('traceparent'))).toBe(clientTrace);
    await until(
      () => spansOf(clientTrace).some((s) => s.name.startsWith('reply ')) && spansOf(clientTrace).some((s) => s.name === 'POST /graphql'),
      'the API’s and the worker’s spans in the client’s trace',
    );
    const http = one(spansOf(clientTrace), 'POST /graphql');
    expect(http.parentSpanId).toBe(clientSpan);
    expect(r.headers.get('traceparent')).toBe(`00-${clientTrace}-${http.spanId}-01`);
  });

  it('a shadow run is a trace of its own linked to the request it mirrors, and the capture keeps the trace id the client got', async () => {
    const PREDICT_AB =
      'query($x: [Float!]!) { predict(model: "ab", input: { tensors: [{ name: "x", shape: [1, 4], datatype: "FP32", data: $x }] }) { version } }';
    const r = await gql<{ predict: { version: string } }>(stack.url, PREDICT_AB, { x: [1, 2, 3, 4] }, { 'x-request-id': 'trace-shadow-1' });
    expect(r.body.data?.predict.version, JSON.stringify(r.body)).toBe('1');
    const traceId = traceIdOf(r.headers.get('traceparent'));
    const mirrors = (): ReceivedSpan[] =>
      receiver.spans.filter((s) => s.name === 'mirror ab' && s.links.some((l) => l.traceId === traceId));
    // The mirror span ends once the shadow's answer is compared: after its own edge batch, job and reply.
    await until(
      () => mirrors().length > 0 && spansOf(traceId).some((s) => s.name === 'predict ab'),
      'the mirror span linked to the request, and the request’s predict span',
    );
    const [mirror] = mirrors();
    const predict = one(spansOf(traceId), 'predict ab');
    expect(mirrors()).toHaveLength(1);
    // Not a child: a root of its own trace, linked to the request's predict span.
    expect(mirror.traceId).not.toBe(traceId);
    expect(mirror.parentSpanId).toBeUndefined();
    expect(mirror.links).toEqual([{ traceId, spanId: predict.spanId }]);
    expect(mirror.attributes).toMatchObject({
      'batchline.model': 'ab',
      'batchline.version': '2',
      'batchline.mirror.kind': 'shadow',
      'batchline.mirror.outcome': 'compared',
      'batchline.request_id': 'trace-shadow-1',
    });
    // The shadow's way through the queue is in the mirror's trace, under it; the client's trace has only its own.
    await until(() => spansOf(mirror.traceId).some((s) => s.name === 'reply ab'), 'the shadow job’s reply span');
    expect(one(spansOf(mirror.traceId), 'edge batch ab').parentSpanId).toBe(mirror.spanId);
    expect(one(spansOf(mirror.traceId), /^process /).attributes).toMatchObject({ 'batchline.version': '2' });
    await until(() => spansOf(traceId).some((s) => s.name === 'reply ab'), 'the request’s reply span');
    expect(spansOf(traceId).filter((s) => s.name === 'edge batch ab')).toHaveLength(1);
    expect(
      spansOf(traceId)
        .filter((s) => s.name.startsWith('process '))
        .map((s) => s.attributes['batchline.version']),
    ).toEqual(['1']);

    // Over graphql-ws, the trace comes in the operation's extensions, not a header: the capture still keeps it.
    const wsTrace = '5e0c63257de34c926f9efcd03ce2c1a6';
    const client = wsClient(stack.url.replace('http', 'ws'));
    try {
      const events: { data?: unknown }[] = [];
      await new Promise<void>((resolve, reject) =>
        client.subscribe(
          { query: PREDICT_AB, variables: { x: [4, 3, 2, 1] }, extensions: { traceparent: `00-${wsTrace}-b7ad6b7169203331-01` } },
          { next: (v) => void events.push(v), error: reject, complete: resolve },
        ),
      );
      expect(events).toEqual([expect.objectContaining({ data: { predict: { version: '1' } } })]);
    } finally {
      await client.dispose();
    }
    const captured = async (): Promise<{ requestId: string; traceId: string | null }[]> =>
      (
        await gql<{ capturedPayloads: { payloads: { requestId: string; traceId: string | null }[] } }>(
          stack.url,
          '{ capturedPayloads(model: "ab", limit: 100) { payloads { requestId traceId } } }',
        )
      ).body.data?.capturedPayloads.payloads ?? [];
    await until(async () => (await captured()).length === 2, 'both requests captured');
    const byTrace = (await captured()).map((c) => c.traceId);
    expect(byTrace).toEqual([traceId, wsTrace]);
    expect((await captured())[0].requestId).toBe('trace-shadow-1');
  });

  it('an async submission’s delivery, over graphql-ws and over SSE, is linked to the submission, in the subscriber’s own trace', async () => {
    const submitted = await gql<{ submitPrediction: { id: string } }>(
      stack.url,
      'mutation { submitPrediction(model: "name-gender", input: { text: "Ottoline" }) { id } }',
    );
    const submitTrace = traceIdOf(submitted.headers.get('traceparent'));
    const id = submitted.body.data!.submitPrediction.id;
    const subscriberTrace = '0af7651916cd43dd8448eb211c80319c';
    const client = wsClient(stack.url.replace('http', 'ws'));
    const events: { data?: unknown; extensions?: Record<string, unknown> }[] = [];
    try {
      await new Promise<void>((resolve, reject) =>
        client.subscribe(
          {
            query: 'subscription($id: ID!) { predictionResult(id: $id) { status result { label } } }',
            variables: { id },
            extensions: { traceparent: `00-${subscriberTrace}-b7ad6b7169203331-01` },
          },
          { next: (v) => void events.push(v as (typeof events)[number]), error: reject, complete: resolve },
        ),
      );
    } finally {
      await client.dispose();
    }
    expect(events).toHaveLength(1);
    expect(events[0].data, JSON.stringify(events[0])).toMatchObject({ predictionResult: { status: 'COMPLETED' } });
    expect(String(events[0].extensions?.traceparent)).toContain(subscriberTrace);
    // Each span is exported when it ends: the subscription's when the operation completes, after the delivery.
    await until(
      () =>
        ['deliver name-gender', 'subscription predictionResult'].every((n) => spansOf(subscriberTrace).some((s) => s.name === n)) &&
        spansOf(submitTrace).some((s) => s.name.startsWith('finish ')),
      'the delivery and subscription spans, and the submission’s finish span',
    );
    const submit = one(spansOf(submitTrace), 'submit name-gender');
    const finish = one(spansOf(submitTrace), 'finish name-gender');
    expect(finish.parentSpanId).toBe(one(spansOf(submitTrace), /^process /).spanId);
    const subscription = one(spansOf(subscriberTrace), 'subscription predictionResult');
    expect(subscription.kind).toBe(SERVER);
    const deliver = one(spansOf(subscriberTrace), 'deliver name-gender');
    expect(deliver.parentSpanId).toBe(subscription.spanId);
    expect(deliver.links).toEqual([{ traceId: submitTrace, spanId: submit.spanId }]);
    expect(deliver.attributes).toMatchObject({ 'batchline.prediction.id': id, 'batchline.status': 'COMPLETED' });

    // Over SSE too: the subscriber's traceparent header is continued, and its delivery links to the same submission.
    const sseTrace = 'a3ce929d0e0e47364bf92f3577b34da6';
    const sse = await sseCollect(stack.url, 'subscription($id: ID!) { predictionResult(id: $id) { status } }', { id }, 20_000, {
      traceparent: `00-${sseTrace}-00f067aa0ba902b7-01`,
    });
    expect(sse.events).toHaveLength(1);
    expect(sse.headers?.get('traceparent')).toContain(sseTrace);
    await until(
      () => ['deliver name-gender', 'POST /graphql'].every((n) => spansOf(sseTrace).some((s) => s.name === n)),
      'the SSE delivery span and its request’s',
    );
    const sseDeliver = one(spansOf(sseTrace), 'deliver name-gender');
    expect(sseDeliver.parentSpanId).toBe(one(spansOf(sseTrace), 'POST /graphql').spanId);
    expect(sseDeliver.links).toEqual([{ traceId: submitTrace, spanId: submit.spanId }]);
  });
});

describe('tracing, sampled out or with the collector down', () => {
  const prefixes: string[] = [];
  const stacks: Child[][] = [];

  afterAll(async () => {
    await Promise.all(stacks.flat().map((p) => p.stop()));
    for (const p of prefixes) await dropPrefix(redisUrl, p);
  });

  it('at a sampling ratio of 0, sends nothing, yet still propagates a context', async () => {
    const receiver = await startOtlpReceiver();
    const prefix = uniquePrefix('trace0');
    prefixes.push(prefix);
    const stack = await startStack(prefix, tracingEnv(receiver.endpoint, { BATCHLINE_TRACING_SAMPLING_RATIO: '0' }), ['cpu']);
    stacks.push(stack.procs);
    for (let i = 0; i < 5; i++) {
      const r = await gql(stack.url, `{ predict(model: "name-gender", input: { text: "Rosamund${i}" }) { label } }`);
      expect(r.body.errors).toBeUndefined();
      expect(r.headers.get('traceparent')).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    }
    // Stopping flushes what the processors hold: after it, anything sampled would have arrived.
    await Promise.all(stack.procs.map((p) => p.stop()));
    expect(stack.procs.map((p) => p.output()).join('\n')).toMatch(/"msg":"tracing on"/);
    expect(receiver.spans).toEqual([]);
    expect(receiver.requests).toBe(0);
    await receiver.close();
  });

  it('with the collector down, every request is answered, nothing is logged as an error, and spans past the queue are dropped', async () => {
    const prefix = uniquePrefix('tracedown');
    prefixes.push(prefix);
    // A collector that accepts connections and never answers (a hung one, or one behind a
    // partition): each export waits out its timeout, so the span queue (small here) fills and
    // its bound shows. Its sockets are closed when the test ends.
    const sockets = new Set<Socket>();
    const hung = createNetServer((socket) => void sockets.add(socket));
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
    onTestFinished(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => hung.close(resolve));
    });
    const stack = await startStack(
      prefix,
      tracingEnv(`http://127.0.0.1:${(hung.address() as AddressInfo).port}`, {
        OTEL_BSP_MAX_QUEUE_SIZE: '32',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '16',
        OTEL_EXPORTER_OTLP_TIMEOUT: '2000',
      }),
      ['cpu'],
    );
    stacks.push(stack.procs);
    const api = stack.procs.at(-1)!;
    let ok = 0;
    for (let round = 0; round < 10; round++) {
      const answers = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          gql(stack.url, `{ predict(model: "name-gender", input: { text: "Beatrix${round}x${i}" }) { label } }`),
        ),
      );
      ok += answers.filter((a) => a.status === 200 && !a.body.errors).length;
    }
    expect(ok).toBe(100);
    // The span processor counts what it dropped and says so when a span next finds room (once
    // an export has timed out): a request now and then brings that span.
    await until(
      async () => {
        const r = await gql(stack.url, '{ predict(model: "name-gender", input: { text: "Beatrix" }) { label } }');
        expect(r.body.errors).toBeUndefined();
        return /Dropped \d+ spans because maxQueueSize reached/.test(api.output()) && /span export failed/.test(api.output());
      },
      'the span processor saying it dropped spans past its queue, and the failed export reported',
      45_000,
      500,
    );
    const lines = stack.procs.flatMap((p) => p.output().split('\n')).filter((l) => l.startsWith('{'));
    expect(lines.filter((l) => /"level":(50|60)/.test(l))).toEqual([]);
    // Reported once, not once per export: the first failure, then a count a minute at most.
    expect(api.output().match(/span export failed/g)).toHaveLength(1);
  });
});
