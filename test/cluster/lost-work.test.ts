/**
 * What asynchronous replication can still lose, and how batchline says so. A master's
 * replica is frozen (SIGSTOP) and cut off: writes to that master are then acknowledged with its copy only
 * (batchline waits for a replica at most 250 ms, then stops asking one that does not answer).
 * The master is SIGKILLed and the replica, thawed, takes over without those writes. Jobs
 * queued there are gone; their records, kept on other masters, still say QUEUED. Each such
 * prediction must end FAILED with WORK_LOST, for a poller and for a subscriber that was
 * already waiting: a stated failure to resubmit, never a silent wait. A record lost with the
 * master ends its watch with PREDICTION_NOT_FOUND.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql, wsClient } from '../support/clients.ts';
import { clusterStack, shardSubscribers, useCluster } from '../support/cluster.ts';
import { startApi, uniquePrefix, type RunningApi } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';
import { LOST_WORK_GRACE_MS } from '../../core/prediction/lost-work.ts';
import { keyspace } from '../../core/redis/connection.ts';

const holder = useCluster({ nodeTimeoutMs: 1000 });
const prefix = uniquePrefix('lost');
let api: RunningApi;

const SUBMIT = 'mutation($i: PredictionInput!) { submitPrediction(model: "mlp-bench", input: $i) { id } }';
const POLL = 'query($id: ID!) { prediction(id: $id) { status error { code } } }';
const RESULT = 'subscription($id: ID!) { predictionResult(id: $id) { status error { code } } }';

beforeAll(async () => {
  // No gpu worker: the jobs wait in the gpu queue, on the master that is about to die.
  api = await startApi(clusterStack(holder.cluster, prefix, { env: { BATCHLINE_MAINTENANCE: 'false' } }));
}, 60_000);

afterAll(async () => {
  await api?.close();
});

describe('work lost with a master whose replica lagged', () => {
  it('ends as FAILED WORK_LOST for its poller and its waiting subscriber, once', async () => {
    const { cluster } = holder;
    const queueSlot = await cluster.slotOf(`${prefix}:{gpu}:wait`);
    const master = await cluster.masterOf(queueSlot);
    const replica = (await cluster.topology()).find((n) => n.masterId === master.id)!;
    const replicaNode = cluster.nodes.find((n) => n.port === replica.port)!;
    const masterNode = cluster.nodes.find((n) => n.port === master.port)!;

    // The replica freezes and the master drops its link: what the master takes from now on
    // reaches no replica (a frozen replica would still read what sat in its socket buffer).
    replicaNode.signal('SIGSTOP');
    const direct = new Redis(master.port, '127.0.0.1', { maxRetriesPerRequest: 1 });
    await direct.call('CLIENT', 'KILL', 'TYPE', 'replica');
    direct.disconnect();
    const ids: string[] = [];
    for (let i = 0; i < 9; i++) {
      const r = await gql<{ submitPrediction: { id: string } }>(api.url, SUBMIT, { i: { features: Array.from({ length: 512 }, () => i) } });
      expect(r.body.errors).toBeUndefined();
      ids.push(r.body.data!.submitPrediction.id);
    }
    // Records on the dying master are lost with their jobs; the others outlive them.
    const onMaster = await Promise.all(
      ids.map(async (id) => (await cluster.masterOf(await cluster.slotOf(keyspace(prefix, true).prediction(id)))).id === master.id),
    );
    const recordKept = ids.filter((_, i) => !onMaster[i]);
    const recordLost = ids.filter((_, i) => onMaster[i]);
    expect(recordKept.length).toBeGreaterThan(0);

    const ws = wsClient(api.ws);
    const heard = new Map<string, { status: string; code?: string }[]>();
    const ended = new Set<string>();
    for (const id of ids) {
      ws.subscribe(
        { query: RESULT, variables: { id } },
        {
          next: (v) => {
            const code = v.errors?.[0]?.extensions?.code as string | undefined;
            const p = (v.data as { predictionResult: { status: string; error: { code: string } | null } } | null)?.predictionResult;
            heard.set(id, [...(heard.get(id) ?? []), p ? { status: p.status, code: p.error?.code } : { status: 'ERROR', code }]);
          },
          error: (e) => {
            const code = (e as { extensions?: { code?: string } }[])[0]?.extensions?.code;
            heard.set(id, [...(heard.get(id) ?? []), { status: 'ERROR', code }]);
            ended.add(id);
          },
          complete: () => ended.add(id),
        },
      );
    }
    for (const id of ids)
      await until(
        async () => (await shardSubscribers(cluster, keyspace(prefix, true).resultChannel(id))) === 1,
        'every subscription in place',
      );

    await masterNode.kill('SIGKILL');
    replicaNode.signal('SIGCONT');
    await until(
      async () => (await cluster.masterOf(queueSlot).catch(() => master)).id === replica.id,
      'the lagging replica to take over',
      30_000,
    );

    const polled = new Map<string, { status: string; code?: string }>();
    await until(
      async () => {
        for (const id of ids) {
          const r = await gql<{ prediction: { status: string; error: { code: string } | null } }>(api.url, POLL, { id });
          const code = r.body.errors?.[0]?.extensions?.code as string | undefined;
          const p = r.body.data?.prediction;
          polled.set(id, p ? { status: p.status, code: p.error?.code } : { status: 'ERROR', code });
        }
        return recordKept.every((id) => polled.get(id)?.status === 'FAILED');
      },
      'the lost work to be stated',
      LOST_WORK_GRACE_MS + 20_000,
      250,
    );
    await until(() => ids.every((id) => ended.has(id)), 'every subscription to end', 20_000);
    await ws.dispose();

    for (const id of recordKept) {
      expect(polled.get(id)).toEqual({ status: 'FAILED', code: 'WORK_LOST' });
      expect(heard.get(id)).toEqual([{ status: 'FAILED', code: 'WORK_LOST' }]);
    }
    for (const id of recordLost) {
      expect(polled.get(id)).toEqual({ status: 'ERROR', code: 'PREDICTION_NOT_FOUND' });
      expect(heard.get(id)).toEqual([{ status: 'ERROR', code: 'PREDICTION_NOT_FOUND' }]);
    }
    console.log(`lost work: ${JSON.stringify({ submitted: ids.length, workLost: recordKept.length, recordLost: recordLost.length })}`);
  }, 90_000);
});
