/**
 * End to end over real HTTP, SSE and WebSocket, against a private Redis, real BullMQ
 * queues and worker processes running onnxruntime-node.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { gql, sseCollect, wsClient, wsCollect } from '../support/clients.ts';
import { dropPrefix, spawnCli, startApi, startWorker, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('serving');
const opts = { redisUrl, prefix };
let api: RunningApi;
const workers: Child[] = [];

const PREDICT = `query($model: String!, $input: PredictionInput!) {
  predict(model: $model, input: $input) { id model version label score probabilities { label probability } predictions { label score } outputs { name shape datatype data } timings { queueMs inferenceMs totalMs } cached batchRows }
}`;
const SUBMIT = `mutation($model: String!, $input: PredictionInput!) { submitPrediction(model: $model, input: $input) { id status model version } }`;
const RESULT = `subscription($id: ID!) { predictionResult(id: $id) { id status result { label score cached } error { code message } } }`;
const POLL = `query($id: ID!) { prediction(id: $id) { id status result { label score } error { code } } }`;

beforeAll(async () => {
  workers.push(await startWorker('cpu', opts), await startWorker('gpu', opts));
  api = await startApi(opts);
});

afterAll(async () => {
  await api?.close();
  await Promise.all(workers.map((w) => w.stop()));
  await dropPrefix(redisUrl, prefix);
});

async function pollUntilFinal(id: string): Promise<Record<string, unknown>> {
  let p: Record<string, unknown> | undefined;
  await until(
    async () => {
      p = (await gql<{ prediction: Record<string, unknown> }>(api.url, POLL, { id })).body.data!.prediction;
      return p.status === 'COMPLETED' || p.status === 'FAILED';
    },
    () => `prediction ${id} to be COMPLETED or FAILED (last: ${JSON.stringify(p)})`,
    45_000,
    20,
  );
  return p!;
}

describe('predict', () => {
  it('answers female for Maria with its probability', async () => {
    const r = await gql<{ predict: Record<string, any> }>(api.url, PREDICT, { model: 'name-gender', input: { text: 'Maria' } });
    expect(r.status).toBe(200);
    const p = r.body.data!.predict;
    expect(p.label).toBe('female');
    expect(p.score).toBeGreaterThan(0.5);
    expect(p.probabilities.map((c: { label: string }) => c.label)).toEqual(['female', 'male']);
    expect(p.probabilities[0].probability + p.probabilities[1].probability).toBeCloseTo(1, 5);
    expect(p.model).toBe('name-gender');
    expect(p.version).toBe('1');
    expect(p.outputs[0]).toMatchObject({ name: 'probabilities', shape: [1, 2], datatype: 'FP32' });
    expect(p.timings.totalMs).toBeGreaterThan(0);
  });

  it('answers several rows with several predictions, in order', async () => {
    const r = await gql<{ predict: Record<string, any> }>(api.url, PREDICT, {
      model: 'name-gender',
      input: { texts: ['John', 'Elizabeth', 'Robert'] },
    });
    expect(r.body.errors).toBeUndefined();
    expect(r.body.data!.predict.predictions.map((x: { label: string }) => x.label)).toEqual(['male', 'female', 'male']);
    expect(r.body.data!.predict.outputs[0].shape).toEqual([3, 2]);
  });

  it('serves the gpu-pool benchmark model from instances, with probabilities from its logits', async () => {
    const row = Array.from({ length: 512 }, (_, i) => Math.sin(i));
    const r = await gql<{ predict: Record<string, any> }>(api.url, PREDICT, {
      model: 'mlp-bench',
      input: { instances: [row, row.map((v) => -v)] },
    });
    expect(r.body.errors).toBeUndefined();
    const p = r.body.data!.predict;
    expect(p.predictions).toHaveLength(2);
    expect(p.outputs[0]).toMatchObject({ name: 'logits', shape: [2, 10] });
    const sum = p.probabilities.reduce((s: number, c: { probability: number }) => s + c.probability, 0);
    expect(sum).toBeCloseTo(1, 5);
  });

  it('batches concurrent synchronous requests to a batching model, each getting exactly its own rows', async () => {
    const rows = Array.from({ length: 12 }, (_, r) => Array.from({ length: 512 }, (_, i) => Math.cos(r * 7 + i)));
    const alone: Record<string, any>[] = [];
    for (const row of rows)
      alone.push(
        (await gql<{ predict: Record<string, any> }>(api.url, PREDICT, { model: 'mlp-bench', input: { features: row } })).body.data!
          .predict,
      );
    const together = await Promise.all(
      rows.map((row) => gql<{ predict: Record<string, any> }>(api.url, PREDICT, { model: 'mlp-bench', input: { features: row } })),
    );
    expect(together.some((r) => r.body.data!.predict.batchRows > 1)).toBe(true);
    together.forEach((r, i) => {
      const got = r.body.data!.predict.outputs[0].data as number[];
      (alone[i].outputs[0].data as number[]).forEach((v, k) => expect(got[k]).toBeCloseTo(v, 4));
    });
    // Answers that shared a job do not share an id: no client can poll another's rows.
    expect(new Set(together.map((r) => r.body.data!.predict.id)).size).toBe(rows.length);
  });

  it('answers a repeated request from the cache, marked cached, with the same answer', async () => {
    const first = await gql<{ predict: Record<string, any> }>(api.url, PREDICT, { model: 'name-gender', input: { text: 'Penelope' } });
    const second = await gql<{ predict: Record<string, any> }>(api.url, PREDICT, { model: 'name-gender', input: { text: 'Penelope' } });
    expect(first.body.data!.predict.cached).toBe(false);
    expect(second.body.data!.predict.cached).toBe(true);
    expect(second.body.data!.predict.probabilities).toEqual(first.body.data!.predict.probabilities);
  });

  it('shares one inference between concurrent identical requests', async () => {
    const rs = await Promise.all(
      Array.from({ length: 5 }, () =>
        gql<{ predict: Record<string, any> }>(api.url, PREDICT, { model: 'name-gender', input: { text: 'Bartholomew' } }),
      ),
    );
    const ids = new Set(rs.map((r) => r.body.data!.predict.id));
    expect(ids.size).toBe(1);
    expect(rs.filter((r) => !r.body.data!.predict.cached)).toHaveLength(1);
  });

  it('lists models with inputs, outputs, labels, pool and readiness', async () => {
    const r = await gql<{ models: any[] }>(
      api.url,
      '{ models { name version pool ready status workers labels inputs { name datatype shape } outputs { name shape } batching { policy maxBatchSize limit edge { maxRows maxDelayMs } worker { policy maxBatchSize limit } } } }',
    );
    const byName = Object.fromEntries(r.body.data!.models.map((m) => [m.name, m]));
    expect(byName['name-gender']).toMatchObject({
      version: '1',
      pool: 'cpu',
      ready: true,
      status: 'LOADED',
      labels: ['female', 'male'],
      inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 1024] }],
    });
    expect(byName['mlp-bench']).toMatchObject({ pool: 'gpu', ready: true, outputs: [{ name: 'logits', shape: [-1, 10] }] });
    // Both batchers, as they run: the edge gathers in both pools; only the gpu worker merges jobs.
    expect(byName['name-gender'].batching).toEqual({
      policy: 'fixed',
      maxBatchSize: 32,
      limit: 1,
      edge: { maxRows: 16, maxDelayMs: 2 },
      worker: { policy: 'fixed', maxBatchSize: 1, limit: 1 },
    });
    expect(byName['mlp-bench'].batching).toMatchObject({
      edge: { maxRows: 16, maxDelayMs: 2 },
      worker: { policy: 'fixed', maxBatchSize: 32, limit: 32 },
    });
    expect(byName['mlp-bench'].workers).toBeGreaterThanOrEqual(1);
  });
});

describe('submitPrediction and predictionResult', () => {
  it('submits, then delivers the result over SSE once and completes', async () => {
    const t = await gql<{ submitPrediction: { id: string; status: string } }>(api.url, SUBMIT, {
      model: 'name-gender',
      input: { text: 'Margaret' },
    });
    expect(t.body.data!.submitPrediction.status).toMatch(/QUEUED|COMPLETED/);
    const { status, events } = await sseCollect(api.url, RESULT, { id: t.body.data!.submitPrediction.id });
    expect(status).toBe(200);
    expect(events).toHaveLength(1);
    expect(events[0].data).toMatchObject({ predictionResult: { status: 'COMPLETED', result: { label: 'female' } } });
  });

  it('submits, then delivers the result over WebSocket (graphql-transport-ws) once', async () => {
    const client = wsClient(api.ws);
    try {
      const t = await gql<{ submitPrediction: { id: string } }>(api.url, SUBMIT, { model: 'name-gender', input: { text: 'William' } });
      const events = await wsCollect(client, RESULT, { id: t.body.data!.submitPrediction.id });
      expect(events).toHaveLength(1);
      expect(events[0].data).toMatchObject({ predictionResult: { status: 'COMPLETED', result: { label: 'male' } } });
    } finally {
      await client.dispose();
    }
  });

  it('delivers a result that finished before the subscription began, exactly once', async () => {
    const t = await gql<{ submitPrediction: { id: string } }>(api.url, SUBMIT, { model: 'name-gender', input: { text: 'Katherine' } });
    const id = t.body.data!.submitPrediction.id;
    expect((await pollUntilFinal(id)).status).toBe('COMPLETED');
    const sse = await sseCollect(api.url, RESULT, { id });
    expect(sse.events).toHaveLength(1);
    const client = wsClient(api.ws);
    try {
      const events = await wsCollect(client, RESULT, { id });
      expect(events).toHaveLength(1);
      expect(events[0].data).toMatchObject({ predictionResult: { id, status: 'COMPLETED' } });
    } finally {
      await client.dispose();
    }
  });

  it('lets a client poll the status until the result is there', async () => {
    const t = await gql<{ submitPrediction: { id: string } }>(api.url, SUBMIT, { model: 'name-gender', input: { text: 'Thomas' } });
    const final = await pollUntilFinal(t.body.data!.submitPrediction.id);
    expect(final).toMatchObject({ status: 'COMPLETED', result: { label: 'male' } });
  });

  it('many concurrent subscribers each get their own result once', async () => {
    const names = ['Anna', 'Peter', 'Sophia', 'George', 'Olivia', 'Henry', 'Emma', 'Jack'];
    const client = wsClient(api.ws);
    try {
      const results = await Promise.all(
        names.map(async (name) => {
          const t = await gql<{ submitPrediction: { id: string } }>(api.url, SUBMIT, { model: 'name-gender', input: { text: name } });
          const id = t.body.data!.submitPrediction.id;
          const events = await wsCollect(client, RESULT, { id });
          return { id, events };
        }),
      );
      for (const r of results) {
        expect(r.events).toHaveLength(1);
        expect((r.events[0].data as any).predictionResult.id).toBe(r.id);
      }
    } finally {
      await client.dispose();
    }
  });
});

describe('two API processes sharing one Redis', () => {
  it('delivers on one replica the result of work submitted on the other', async () => {
    const second = await spawnCli(['serve', '--port', '0'], { ...opts, env: { BATCHLINE_HOST: '127.0.0.1' } }, /"msg":"API listening"/);
    try {
      const port = /"port":(\d+)/.exec(
        second
          .output()
          .split('\n')
          .find((l) => l.includes('API listening'))!,
      )![1];
      const otherUrl = `http://127.0.0.1:${port}/graphql`;
      const t = await gql<{ submitPrediction: { id: string } }>(otherUrl, SUBMIT, { model: 'name-gender', input: { text: 'Victoria' } });
      expect(t.body.errors).toBeUndefined();
      const client = wsClient(api.ws);
      try {
        const events = await wsCollect(client, RESULT, { id: t.body.data!.submitPrediction.id });
        expect(events).toHaveLength(1);
        expect(events[0].data).toMatchObject({ predictionResult: { status: 'COMPLETED', result: { label: 'female' } } });
      } finally {
        await client.dispose();
      }
      // And the other way round: synchronous predict on the second replica.
      const p = await gql<{ predict: { label: string } }>(otherUrl, PREDICT, { model: 'name-gender', input: { text: 'Edward' } });
      expect(p.body.data!.predict.label).toBe('male');
    } finally {
      expect(await second.stop()).toBe(0);
    }
  });
});
