/**
 * The errors a worker reports reach the client with their code and status: 422 for a model
 * output that is NaN or infinite, 500 INFERENCE_FAILED (no stack), FAILED events for
 * subscribers, 504 at a deadline with the job taken back. A cpu worker runs throughout; a
 * frozen gpu worker is started where a deadline must pass.
 */
import { describe, expect, inject, it, onTestFinished } from 'vitest';
import { Queue } from 'bullmq';
import { gql, sseCollect } from '../support/clients.ts';
import { errorModels } from '../support/model-repo.ts';
import { startWorker, uniquePrefix } from '../../harness/stack.ts';
import { useStack } from '../support/use-stack.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('worker-errors');
const models = errorModels();
const opts = { redisUrl, prefix, models };
const stack = useStack(opts, ['cpu']);

const PREDICT =
  'query($m: String!, $v: String, $i: PredictionInput!, $t: Int) { predict(model: $m, version: $v, input: $i, timeoutMs: $t) { label } }';

async function expectError(
  res: Promise<{ status: number; headers: Headers; body: { errors?: { message: string; extensions?: Record<string, unknown> }[] } }>,
  status: number,
  code: string,
  message?: RegExp,
) {
  const r = await res;
  expect(r.status).toBe(status);
  expect(r.body.errors?.[0]?.extensions?.code).toBe(code);
  if (message) expect(r.body.errors![0].message).toMatch(message);
  return r;
}

// Inside FP32's range, but the linear layer's sums overflow to -Infinity.
const overflowing = { m: 'flex', i: { tensors: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [3e38, 3e38, 3e38, 3e38] }] } };

describe('a model output that is NaN or infinite is a coded error, never a number or a label', () => {
  it('synchronous predict: 422 NON_FINITE_OUTPUT, whatever fields are selected', async () => {
    await expectError(gql(stack.api.url, PREDICT, overflowing), 422, 'NON_FINITE_OUTPUT', /produced -Infinity in output 'y'/);
    const outputs = 'query($m: String!, $i: PredictionInput!) { predict(model: $m, input: $i) { outputs { name data } } }';
    await expectError(gql(stack.api.url, outputs, overflowing), 422, 'NON_FINITE_OUTPUT');
  });

  it('asynchronous: the subscriber and the poller both see FAILED with NON_FINITE_OUTPUT', async () => {
    const sub = await gql<{ submitPrediction: { id: string } }>(
      stack.api.url,
      'mutation($m: String!, $i: PredictionInput!) { submitPrediction(model: $m, input: $i) { id } }',
      overflowing,
    );
    const id = sub.body.data!.submitPrediction.id;
    const events = await sseCollect(
      stack.api.url,
      'subscription($id: ID!) { predictionResult(id: $id) { status result { score } error { code } } }',
      { id },
    );
    expect(events.events).toEqual([
      { data: { predictionResult: { status: 'FAILED', result: null, error: { code: 'NON_FINITE_OUTPUT' } } } },
    ]);
    const polled = await gql(
      stack.api.url,
      '{ prediction(id: "' + id + '") { status result { score outputs { data } } error { code message } } }',
    );
    expect(polled.status).toBe(200);
    expect(polled.body.data).toMatchObject({ prediction: { status: 'FAILED', result: null, error: { code: 'NON_FINITE_OUTPUT' } } });
  });
});

describe('NON_FINITE_OUTPUT in a job shared by coalesced submissions', () => {
  it('fails only the submission whose rows overflowed; the others of its job are answered', async () => {
    const SUBMIT = 'mutation($m: String!, $i: PredictionInput!) { submitPrediction(model: $m, input: $i) { id } }';
    const fine = (k: number) => ({ m: 'flex', i: { tensors: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [k, 1, 2, 3] }] } });
    // Submitted together, so they share jobs (the ids of one job share their first 8 characters).
    const bad = (k: number): boolean => k % 3 === 2;
    const inputs = Array.from({ length: 12 }, (_, k) => (bad(k) ? overflowing : fine(k)));
    const ids = await Promise.all(
      inputs.map(
        async (vars) => (await gql<{ submitPrediction: { id: string } }>(stack.api.url, SUBMIT, vars)).body.data!.submitPrediction.id,
      ),
    );
    const POLL = 'query($id: ID!) { prediction(id: $id) { status error { code } } }';
    const final = async (id: string) => {
      let p: { status: string; error: { code: string } | null } | undefined;
      await until(async () => {
        p = (await gql<{ prediction: NonNullable<typeof p> }>(stack.api.url, POLL, { id })).body.data!.prediction;
        return ['COMPLETED', 'FAILED'].includes(p.status);
      }, `a final status for ${id}`);
      return p!;
    };
    const jobOf = (id: string): string => id.slice(0, 8);
    expect(ids.some((id, k) => bad(k) && ids.some((other, j) => !bad(j) && jobOf(other) === jobOf(id)))).toBe(true);
    const answers = await Promise.all(ids.map(final));
    answers.forEach((a, k) =>
      bad(k)
        ? expect(a).toEqual({ status: 'FAILED', error: { code: 'NON_FINITE_OUTPUT' } })
        : expect(a).toEqual({ status: 'COMPLETED', error: null }),
    );
  });
});

describe('failures and deadlines', () => {
  it('500 INFERENCE_FAILED when the model cannot run the input, without a stack trace', async () => {
    const r = await expectError(
      gql(stack.api.url, PREDICT, { m: 'flex', i: { tensors: [{ name: 'x', shape: [1, 5], datatype: 'FP32', data: [1, 2, 3, 4, 5] }] } }),
      500,
      'INFERENCE_FAILED',
    );
    expect(JSON.stringify(r.body)).not.toMatch(/\bat .*\.(ts|js):\d+|onnxruntime|stack/i);
  });

  it('a failure reaches the subscriber as a FAILED event with its code', async () => {
    const t = await gql<{ submitPrediction: { id: string } }>(
      stack.api.url,
      'mutation { submitPrediction(model: "flex", input: { tensors: [{ name: "x", shape: [1, 5], datatype: "FP32", data: [1, 2, 3, 4, 5] }] }) { id } }',
    );
    const { events } = await sseCollect(
      stack.api.url,
      'subscription($id: ID!) { predictionResult(id: $id) { status error { code message } } }',
      { id: t.body.data!.submitPrediction.id },
    );
    expect(events).toHaveLength(1);
    expect(events[0].data).toMatchObject({ predictionResult: { status: 'FAILED', error: { code: 'INFERENCE_FAILED' } } });
  });

  it('tiny deadlines (1-10 ms) answer 200 or 504 DEADLINE_EXCEEDED, and the process lives', async () => {
    // A 1 ms timer fires while the enqueue is still in flight: once an unhandled rejection
    // that ended the process (and with it every test of this file).
    const runs = await Promise.all(
      Array.from({ length: 60 }, (_, k) =>
        gql(stack.api.url, PREDICT, { m: 'name-gender', i: { text: `Zq${k}t${Date.now()}` }, t: 1 + (k % 10) }),
      ),
    );
    for (const r of runs)
      if (r.status !== 200) expect([r.status, r.body.errors?.[0]?.extensions?.code]).toEqual([504, 'DEADLINE_EXCEEDED']);
    expect(runs.some((r) => r.status === 504)).toBe(true);
    expect((await gql(stack.api.url, '{ __typename }')).status).toBe(200);
  });

  it('504 DEADLINE_EXCEEDED at the deadline, and the job is taken back', async () => {
    // A gpu worker alive and registered but frozen: the job waits for it past its deadline.
    const gpu = await startWorker('gpu', opts);
    gpu.proc.kill('SIGSTOP');
    onTestFinished(async () => {
      gpu.proc.kill('SIGCONT');
      await gpu.stop();
    });
    const row = Array.from({ length: 512 }, () => 0.1);
    const r = await expectError(gql(stack.api.url, PREDICT, { m: 'mlp-bench', i: { features: row }, t: 300 }), 504, 'DEADLINE_EXCEEDED');
    expect(r.body.errors![0].message).toMatch(/300 ms/);
    // Nothing is left waiting in the gpu queue for a worker to waste time on.
    const queue = new Queue('gpu', { connection: { url: redisUrl }, prefix });
    try {
      // The job is given up by its own timer, right after the request's (edge batches may hold several requests).
      const waiting = async () => {
        const counts = await queue.getJobCounts('wait', 'prioritized', 'active');
        return counts.wait + counts.prioritized + counts.active;
      };
      await until(async () => (await waiting()) === 0, 'the job to be taken back', 5000);
      expect(await waiting()).toBe(0);
    } finally {
      await queue.close();
    }
  });

  it('the server stays healthy after all of it', async () => {
    const res = await fetch(stack.api.url.replace('/graphql', '/health'));
    expect(res.status).toBe(200);
    const ok = await gql<{ predict: { label: string } }>(stack.api.url, PREDICT, { m: 'name-gender', i: { text: 'Maria' } });
    expect(ok.body.data!.predict.label).toBe('female');
  });
});
