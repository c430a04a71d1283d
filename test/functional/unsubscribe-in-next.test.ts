/**
 * A UI's way of using the asynchronous path, through the released clients: submit, subscribe to
 * the result from the mutation's `next` handler, unsubscribe inside the subscription's own
 * `next` handler once the result is in, again and again, many loops on each connection.
 *
 * The released graphql-ws client (6.4.2) releases its connection's lock twice when the server's
 * `complete` arrives in the same socket read as the `next` it unsubscribed in; the count reaches
 * zero early, the client closes the socket with 1000 and ends pending operations without their
 * results (docs/graphql-ws-client-double-release.md). With `complete` sent at once, as before,
 * these loops lost about one subscription in ten and some mutations' answers. The server now
 * holds a subscription's `complete` until the client has read its last result
 * (server/ws-final-complete.ts); the raw-protocol tests below pin how.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import WebSocket from 'ws';
import { startApi, uniquePrefix, type RunningApi } from '../../harness/stack.ts';
import { completedOnServer, runOneResultLoops, type LoopCounts, type LoopOptions } from '../../harness/one-result-loops.ts';
import { gql } from '../support/clients.ts';
import { useStack } from '../support/use-stack.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('unsub');
const env = { BATCHLINE_LOG_REQUESTS: 'off', BATCHLINE_MAINTENANCE: 'false' };
// A grace period longer than any wait here: within a test, only a pong or the client's own
// complete can end a hold.
const stack = useStack({ redisUrl, prefix, env: { ...env, BATCHLINE_WS_COMPLETE_GRACE_MS: '600000' } });
// A second API on the same Redis and workers, with a short grace period: a client that never pongs.
let shortGrace: RunningApi;
beforeAll(async () => {
  shortGrace = await startApi({ redisUrl, prefix, env: { ...env, BATCHLINE_WS_COMPLETE_GRACE_MS: '200' } });
});
afterAll(() => shortGrace?.close());

/** 64 loops over 8 connections, as in issue 24. */
function loops(o: Pick<LoopOptions, 'transport' | 'unsubscribe' | 'iterations'>): Promise<LoopCounts> {
  return runOneResultLoops({
    ...o,
    url: stack.api.url,
    ws: stack.api.ws,
    connections: 8,
    loopsPerConnection: 8,
    model: 'spam-mlp',
    rowWidth: 64,
    boundMs: 15_000,
  });
}

/** Every iteration answered, every subscription exactly one COMPLETED `next`, nothing ended without it. */
async function expectEveryResult(c: LoopCounts, iterations: number): Promise<void> {
  const lostOnServer = await completedOnServer(stack.api.url, c.undeliveredIds);
  expect({
    iterations: c.iterations,
    results: c.results,
    notCompleted: c.notCompleted,
    duplicateNexts: c.duplicateNexts,
    endedWithoutResult: c.endedWithoutResult,
    submitsWithoutAnswer: c.submitsWithoutAnswer,
    errors: c.errors,
    unanswered: c.unanswered,
    completedOnServerButUndelivered: lostOnServer.length,
  }).toEqual({
    iterations,
    results: iterations,
    notCompleted: 0,
    duplicateNexts: 0,
    endedWithoutResult: 0,
    submitsWithoutAnswer: 0,
    errors: 0,
    unanswered: 0,
    completedOnServerButUndelivered: 0,
  });
}

describe('unsubscribing inside next, through the released clients', () => {
  it('graphql-ws: 2,000 iterations of 64 loops over 8 connections deliver every result and answer every operation', async () => {
    const c = await loops({ transport: 'ws', unsubscribe: 'in-next', iterations: 2000 });
    await expectEveryResult(c, 2000);
  });

  it('graphql-ws: loops that never unsubscribe get every result, and every subscription its complete', async () => {
    const c = await loops({ transport: 'ws', unsubscribe: 'never', iterations: 400 });
    await expectEveryResult(c, 400);
    expect(c.completeAfterResultMs).toHaveLength(400);
  });

  it('graphql-sse: 400 iterations of the same pattern deliver every result', async () => {
    const c = await loops({ transport: 'sse', unsubscribe: 'in-next', iterations: 400 });
    await expectEveryResult(c, 400);
  });
});

interface Message {
  id?: string;
  type: string;
  payload?: unknown;
}

/** The protocol by hand (graphql-transport-ws), to see each message the server sends and when. */
async function rawConnection(url: string): Promise<{
  messages: Message[];
  send(m: Message): void;
  waitFor(pred: (m: Message) => boolean, what: string): Promise<Message>;
  close(): void;
}> {
  const socket = new WebSocket(url, 'graphql-transport-ws');
  const messages: Message[] = [];
  socket.on('message', (data) => messages.push(JSON.parse(String(data)) as Message));
  await new Promise<void>((resolve, reject) => socket.once('open', resolve).once('error', reject));
  const send = (m: Message): void => socket.send(JSON.stringify(m));
  const waitFor = async (pred: (m: Message) => boolean, what: string): Promise<Message> => {
    await until(
      () => messages.some(pred),
      () => `${what}; got ${JSON.stringify(messages)}`,
      15_000,
      5,
    );
    return messages.find(pred)!;
  };
  send({ type: 'connection_init' });
  await waitFor((m) => m.type === 'connection_ack', 'connection_ack');
  return { messages, send, waitFor, close: () => socket.close() };
}

const RESULT = 'subscription($id: ID!) { predictionResult(id: $id) { status } }';

/** A prediction that has finished, so that a subscription to it answers at once. */
async function finishedPrediction(): Promise<string> {
  const r = await gql<{ submitPrediction: { id: string } }>(
    stack.api.url,
    'mutation($i: PredictionInput!) { submitPrediction(model: "spam-mlp", input: $i) { id } }',
    { i: { features: Array.from({ length: 64 }, () => 0.5) } },
  );
  const id = r.body.data!.submitPrediction.id;
  let status = '';
  await until(
    async () => {
      const p = await gql<{ prediction: { status: string } }>(stack.api.url, 'query($id: ID!) { prediction(id: $id) { status } }', { id });
      status = p.body.data?.prediction.status ?? '';
      return status === 'COMPLETED';
    },
    () => `prediction ${id} COMPLETED (last: ${status})`,
  );
  return id;
}

const pingAfter = (messages: Message[], id: string): ((m: Message) => boolean) => {
  return (m) => m.type === 'ping' && messages.indexOf(m) > messages.findIndex((n) => n.id === id && n.type === 'next');
};

describe('graphql-ws: the last result before complete', () => {
  it('after the last next the server pings, and sends complete once the client has answered with pong', async () => {
    const id = await finishedPrediction();
    const c = await rawConnection(stack.api.ws);
    try {
      c.send({ id: 's1', type: 'subscribe', payload: { query: RESULT, variables: { id } } });
      await c.waitFor((m) => m.id === 's1' && m.type === 'next', 'the result');
      const ping = await c.waitFor(pingAfter(c.messages, 's1'), 'a ping after the result');
      // The grace period outlasts this wait: only the pong can bring `complete` now.
      c.send({ type: 'pong', payload: ping.payload });
      await c.waitFor((m) => m.id === 's1' && m.type === 'complete', 'complete after pong');
      expect(c.messages.filter((m) => m.id === 's1' || m.type === 'ping').map((m) => m.type)).toEqual(['next', 'ping', 'complete']);
    } finally {
      c.close();
    }
  });

  it('a client that completes the subscription itself meanwhile gets no complete from the server', async () => {
    const id = await finishedPrediction();
    const c = await rawConnection(stack.api.ws);
    try {
      c.send({ id: 's1', type: 'subscribe', payload: { query: RESULT, variables: { id } } });
      await c.waitFor((m) => m.id === 's1' && m.type === 'next', 'the result');
      const ping = await c.waitFor(pingAfter(c.messages, 's1'), 'a ping after the result');
      c.send({ id: 's1', type: 'complete' });
      // The late pong would release a subscription still held; then an operation to read the
      // socket up to: whatever the server sent for s1 after our complete is before its answer.
      c.send({ type: 'pong', payload: ping.payload });
      c.send({ id: 'q1', type: 'subscribe', payload: { query: '{ __typename }' } });
      await c.waitFor((m) => m.id === 'q1' && m.type === 'complete', 'the query answered');
      expect(c.messages.filter((m) => m.id === 's1').map((m) => m.type)).toEqual(['next']);
    } finally {
      c.close();
    }
  });

  it('a client that never answers pings still gets complete, at the end of the grace period', async () => {
    const id = await finishedPrediction();
    const c = await rawConnection(shortGrace.ws);
    try {
      c.send({ id: 's1', type: 'subscribe', payload: { query: RESULT, variables: { id } } });
      await c.waitFor((m) => m.id === 's1' && m.type === 'complete', 'complete without a pong');
      const types = c.messages.filter((m) => m.id === 's1' || m.type === 'ping').map((m) => m.type);
      expect(types).toEqual(['next', 'ping', 'complete']);
    } finally {
      c.close();
    }
  });

  it('a subscription refused at once (unknown id) is held the same way: its error result, a ping, complete after pong', async () => {
    const c = await rawConnection(stack.api.ws);
    try {
      c.send({ id: 's1', type: 'subscribe', payload: { query: RESULT, variables: { id: 'no-such-prediction' } } });
      const next = await c.waitFor((m) => m.id === 's1' && m.type === 'next', 'the error result');
      expect(next.payload).toMatchObject({ errors: [{ extensions: { code: 'PREDICTION_NOT_FOUND' } }] });
      const ping = await c.waitFor(pingAfter(c.messages, 's1'), 'a ping after the result');
      c.send({ type: 'pong', payload: ping.payload });
      await c.waitFor((m) => m.id === 's1' && m.type === 'complete', 'complete after pong');
    } finally {
      c.close();
    }
  });

  it('a pong answers its ping and every ping before it: one pong to the last ping completes every subscription', async () => {
    const ids = await Promise.all(Array.from({ length: 20 }, () => finishedPrediction()));
    const c = await rawConnection(stack.api.ws);
    try {
      ids.forEach((id, i) => c.send({ id: `s${i}`, type: 'subscribe', payload: { query: RESULT, variables: { id } } }));
      await until(() => c.messages.filter((m) => m.type === 'next').length === 20, 'the 20 results');
      const lastNext = c.messages.findLastIndex((m) => m.type === 'next');
      await c.waitFor((m) => m.type === 'ping' && c.messages.indexOf(m) > lastNext, 'a ping after the last result');
      const pings = c.messages.filter((m) => m.type === 'ping');
      c.send({ type: 'pong', payload: pings.at(-1)!.payload });
      await until(
        () => c.messages.filter((m) => m.type === 'complete').length === 20,
        () => `20 completes after one pong to the last of ${pings.length} pings; got ${JSON.stringify(c.messages)}`,
      );
    } finally {
      c.close();
    }
  });
});
