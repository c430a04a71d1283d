/**
 * Resharding under traffic: a slot range that holds the cpu queue and the records and result
 * channels of the predictions in it moves to another master, key by key (the protocol
 * `redis-cli --cluster reshard` runs), while predictions are submitted, watched, polled and
 * asked for synchronously. ioredis follows the ASK and MOVED redirections and retries
 * TRYAGAIN (a multi-key script on a slot half moved); no request may fail with one.
 * The API's reply channel (where workers answer its synchronous requests) moves too: Redis
 * drops a sharded subscription whose slot leaves its master, and a reply published before
 * ioredis subscribed again on the new master reached nobody (a predict then waited out its
 * deadline); workers publish such a reply again until it is heard.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql, sseCollect } from '../support/clients.ts';
import { until } from '../support/wait.ts';
import { clusterStack, shardChannels, useCluster } from '../support/cluster.ts';
import { startApi, startWorker, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';

const holder = useCluster();
const prefix = uniquePrefix('reshard');
let api: RunningApi;
const workers: Child[] = [];

const SUBMIT = 'mutation($i: PredictionInput!) { submitPrediction(model: "name-gender", input: $i) { id } }';
const RESULT = 'subscription($id: ID!) { predictionResult(id: $id) { status } }';
const POLL = 'query($id: ID!) { prediction(id: $id) { status } }';
const PREDICT = 'query($i: PredictionInput!) { predict(model: "name-gender", input: $i) { label } }';

beforeAll(async () => {
  const opts = clusterStack(holder.cluster, prefix, { env: { BATCHLINE_MAINTENANCE: 'false' } });
  workers.push(await startWorker('cpu', opts));
  api = await startApi(opts);
}, 120_000);

afterAll(async () => {
  await api?.close();
  await Promise.all(workers.map((w) => w.stop()));
});

describe('resharding a slot range while traffic runs', () => {
  it('moves the queue’s slot and its neighbours to another master with no request failing', async () => {
    const { cluster } = holder;
    const queueSlot = await cluster.slotOf(`${prefix}:{cpu}:wait`);
    const source = await cluster.masterOf(queueSlot);
    const target = (await cluster.topology()).find((n) => n.role === 'master' && n.id !== source.id)!;
    const [lo, hi] = source.slots.find(([a, b]) => queueSlot >= a && queueSlot <= b)!;
    const slots = Array.from(
      { length: Math.min(hi, queueSlot + 150) - Math.max(lo, queueSlot - 150) + 1 },
      (_, i) => Math.max(lo, queueSlot - 150) + i,
    );

    const [replyChannel] = await shardChannels(cluster, `${prefix}:reply:*`);
    expect(replyChannel).toBeDefined();
    const replySlot = await cluster.slotOf(replyChannel);
    const replyFrom = await cluster.masterOf(replySlot);
    // The reply channel's slot moves as well: with the range if it is elsewhere, back to the source if it is on the target.
    if (replyFrom.id !== target.id && !slots.includes(replySlot)) slots.push(replySlot);

    const failures: string[] = [];
    const counts = { submitted: 0, delivered: 0, polled: 0, predicted: 0 };
    let moving = true;
    const traffic = Array.from({ length: 6 }, async (_, lane) => {
      for (let k = 0; moving || k < 5; k++) {
        const text = `Reshard${lane}x${k}`;
        if (lane === 0) {
          const r = await gql<{ predict: { label: string } }>(api.url, PREDICT, { i: { text } });
          if (r.body.errors) failures.push(`predict: ${r.body.errors[0].message}`);
          else counts.predicted++;
          continue;
        }
        const s = await gql<{ submitPrediction: { id: string } }>(api.url, SUBMIT, { i: { text } });
        if (s.body.errors) {
          failures.push(`submit: ${s.body.errors[0].message}`);
          continue;
        }
        counts.submitted++;
        const id = s.body.data!.submitPrediction.id;
        const { events } = await sseCollect(api.url, RESULT, { id }, 30_000);
        if (
          events.length !== 1 ||
          events[0].errors ||
          (events[0].data as { predictionResult: { status: string } }).predictionResult.status !== 'COMPLETED'
        )
          failures.push(`subscription: ${JSON.stringify(events)}`);
        else counts.delivered++;
        const p = await gql<{ prediction: { status: string } }>(api.url, POLL, { id });
        if (p.body.errors || p.body.data!.prediction.status !== 'COMPLETED') failures.push(`poll: ${JSON.stringify(p.body)}`);
        else counts.polled++;
      }
    });
    // Traffic first, so that the range holds live keys when it moves: both paths answering.
    await until(
      () => counts.delivered >= 3 && counts.predicted >= 3,
      () => `traffic before the move (${JSON.stringify(counts)}; failures: ${failures.slice(0, 3).join('; ')})`,
    );
    const before = { ...counts };
    const { keysMoved } = await cluster.moveSlots(slots, target.port);
    if (replyFrom.id === target.id) await cluster.moveSlots([replySlot], source.port);
    const during = { submitted: counts.submitted - before.submitted, predicted: counts.predicted - before.predicted };
    moving = false;
    await Promise.all(traffic);
    console.log(
      `reshard: ${JSON.stringify({ slots: slots.length, keysMoved, ...counts, duringTheMove: during, failures: failures.length })}`,
    );
    expect(failures).toEqual([]);
    expect((await cluster.masterOf(queueSlot)).id).toBe(target.id);
    expect((await cluster.masterOf(replySlot)).id).not.toBe(replyFrom.id);
    expect(keysMoved).toBeGreaterThan(0);
    expect(during.submitted + during.predicted).toBeGreaterThan(0);
  }, 300_000);
});
