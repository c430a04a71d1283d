/**
 * The asynchronous path the way a UI drives it, through the official clients: `submitPrediction`,
 * and from the mutation's `next` handler a `predictionResult(id)` subscription, unsubscribed
 * (by the function `client.subscribe` returned) once the result is in; then again. Many such
 * loops share each connection. Every event is counted, every operation has a bound, and the ids
 * whose result never arrived are kept so that the caller can ask the server whether it had them.
 * Used by test/functional/unsubscribe-in-next.test.ts and bench/unsubscribe-in-next.ts.
 */
import { createClient as createWsClient } from 'graphql-ws';
import { createClient as createSseClient } from 'graphql-sse';
import WebSocket from 'ws';

export interface LoopOptions {
  transport: 'ws' | 'sse';
  /** GraphQL over HTTP (SSE, and the `prediction(id)` check). */
  url: string;
  /** GraphQL over WebSocket. */
  ws: string;
  /** Clients, each with one connection (graphql-ws) or its own streams (graphql-sse). */
  connections: number;
  /** Loops on each client, one iteration in flight each. */
  loopsPerConnection: number;
  /** Iterations in all, over every loop. */
  iterations: number;
  /**
   * When the subscription is disposed: `in-next` inside its `next` handler (the pitfall),
   * `deferred` by `setTimeout(dispose, 0)` from it, `never` (the server completes it).
   */
  unsubscribe: 'in-next' | 'deferred' | 'never';
  model: string;
  /** Width of the model's one FP32 feature row. */
  rowWidth: number;
  /** An operation with no answer in this long is counted unanswered and abandoned. */
  boundMs: number;
  /**
   * graphql-ws's `lazyCloseTimeout`: 0 (its default) closes the socket whenever the connection's
   * last operation ends, which loops like these meet often, and reconnects for the next one.
   */
  lazyCloseTimeoutMs?: number;
}

export interface LoopCounts {
  iterations: number;
  /** Subscriptions that delivered their final record (COMPLETED or not), once. */
  results: number;
  /** Results whose status was not COMPLETED (FAILED, DEADLINE_EXCEEDED, ...). */
  notCompleted: number;
  /** A second `next` on one subscription. */
  duplicateNexts: number;
  /** Subscriptions that completed without their `next`. */
  endedWithoutResult: number;
  /** Mutations that completed without their `next` (no ticket, no id). */
  submitsWithoutAnswer: number;
  /** `error` events, on either operation. */
  errors: number;
  /** Operations (mutation or subscription) with no answer within `boundMs`. */
  unanswered: number;
  /** Ids whose subscription ended without its result or went unanswered: ask the server. */
  undeliveredIds: string[];
  /** Submit sent to result received, per iteration, ms. */
  latencyMs: number[];
  /** `never`: result received to `complete` received, ms. */
  completeAfterResultMs: number[];
  /** graphql-ws: sockets closed, by close code. */
  closes: Record<string, number>;
  /** graphql-ws: protocol pings the server sent. */
  pings: number;
  elapsedMs: number;
}

const SUBMIT = 'mutation($m: String!, $i: PredictionInput!) { submitPrediction(model: $m, input: $i) { id } }';
const RESULT = 'subscription($id: ID!) { predictionResult(id: $id) { id status error { code } } }';

interface Sink {
  next(value: unknown): void;
  error(error: unknown): void;
  complete(): void;
}
type Subscribe = (payload: { query: string; variables: Record<string, unknown> }, sink: Sink) => () => void;

/** Runs the loops until `iterations` have ended one way or another; resolves with the counts. */
export async function runOneResultLoops(o: LoopOptions): Promise<LoopCounts> {
  const counts: LoopCounts = {
    iterations: 0,
    results: 0,
    notCompleted: 0,
    duplicateNexts: 0,
    endedWithoutResult: 0,
    submitsWithoutAnswer: 0,
    errors: 0,
    unanswered: 0,
    undeliveredIds: [],
    latencyMs: [],
    completeAfterResultMs: [],
    closes: {},
    pings: 0,
    elapsedMs: 0,
  };
  const clients = Array.from({ length: o.connections }, () => {
    if (o.transport === 'sse') {
      const c = createSseClient({ url: o.url, retryAttempts: 0 });
      return { subscribe: c.subscribe.bind(c) as unknown as Subscribe, dispose: () => c.dispose() };
    }
    // The client as users make it: lazy, its default retries.
    const c = createWsClient({
      url: o.ws,
      webSocketImpl: WebSocket,
      lazyCloseTimeout: o.lazyCloseTimeoutMs ?? 0,
      on: {
        closed: (e) => void (counts.closes[(e as { code: number }).code] = (counts.closes[(e as { code: number }).code] ?? 0) + 1),
        ping: (received) => void (received && counts.pings++),
      },
    });
    return { subscribe: c.subscribe.bind(c) as unknown as Subscribe, dispose: () => c.dispose() };
  });
  const input = { features: Array.from({ length: o.rowWidth }, (_, i) => ((i * 7) % 11) / 11) };
  let started = 0;

  /** One operation, bounded: resolves when it ends or when `boundMs` passes (then disposed). */
  function operation(
    subscribe: Subscribe,
    query: string,
    variables: Record<string, unknown>,
    onNext: (value: unknown, dispose: () => void) => void,
  ): Promise<{ nexts: number; ended: 'complete' | 'error' | 'unanswered' | 'disposed'; completeAt?: number }> {
    return new Promise((resolve) => {
      let nexts = 0;
      let settled = false;
      const settle = (ended: 'complete' | 'error' | 'unanswered' | 'disposed'): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ nexts, ended, completeAt: ended === 'complete' ? performance.now() : undefined });
      };
      const timer = setTimeout(() => {
        settle('unanswered');
        dispose();
      }, o.boundMs);
      const dispose: () => void = subscribe(
        { query, variables },
        {
          next: (value) => {
            if (++nexts > 1) counts.duplicateNexts++;
            onNext(value, () => {
              dispose();
              // graphql-sse says nothing more once disposed; graphql-ws completes the sink.
              if (o.transport === 'sse') settle('disposed');
            });
          },
          error: () => {
            counts.errors++;
            settle('error');
          },
          complete: () => settle('complete'),
        },
      );
    });
  }

  async function iteration(client: { subscribe: Subscribe }): Promise<void> {
    const t0 = performance.now();
    let id: string | undefined;
    let resultAt: number | undefined;
    let watching: ReturnType<typeof operation> | undefined;
    const submit = await operation(client.subscribe, SUBMIT, { m: o.model, i: input }, (value) => {
      id = (value as { data?: { submitPrediction?: { id: string } } }).data?.submitPrediction?.id;
      if (!id) return;
      // Subscribed from the mutation's `next` handler, as the pattern does.
      watching = operation(client.subscribe, RESULT, { id }, (event, dispose) => {
        const status = (event as { data?: { predictionResult?: { status: string } } }).data?.predictionResult?.status;
        if (!status) return;
        resultAt = performance.now();
        counts.results++;
        counts.latencyMs.push(resultAt - t0);
        if (status !== 'COMPLETED') counts.notCompleted++;
        if (o.unsubscribe === 'in-next') dispose();
        else if (o.unsubscribe === 'deferred') setTimeout(dispose, 0);
      });
    });
    if (submit.ended === 'unanswered') counts.unanswered++;
    if (submit.nexts === 0 && submit.ended === 'complete') counts.submitsWithoutAnswer++;
    if (!watching) return;
    const watched = await watching;
    if (watched.ended === 'unanswered') counts.unanswered++;
    if (watched.nexts === 0 && watched.ended === 'complete') counts.endedWithoutResult++;
    if (resultAt === undefined && (watched.ended === 'unanswered' || watched.ended === 'complete')) counts.undeliveredIds.push(id!);
    if (o.unsubscribe === 'never' && resultAt !== undefined && watched.completeAt !== undefined)
      counts.completeAfterResultMs.push(watched.completeAt - resultAt);
  }

  const t0 = performance.now();
  await Promise.all(
    clients.flatMap((client) =>
      Array.from({ length: o.loopsPerConnection }, async () => {
        while (started < o.iterations) {
          started++;
          await iteration(client);
          counts.iterations++;
        }
      }),
    ),
  );
  counts.elapsedMs = performance.now() - t0;
  await Promise.all(clients.map((c) => c.dispose()));
  return counts;
}

/** Of `ids`, those whose record says COMPLETED: results the server had and did not deliver. */
export async function completedOnServer(url: string, ids: string[]): Promise<string[]> {
  const completed: string[] = [];
  for (const id of ids) {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: 'query($id: ID!) { prediction(id: $id) { status } }', variables: { id } }),
    });
    const body = (await res.json()) as { data?: { prediction?: { status: string } } };
    if (body.data?.prediction?.status === 'COMPLETED') completed.push(id);
  }
  return completed;
}
