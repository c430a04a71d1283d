/**
 * Edge batching on real processes: concurrent synchronous requests to a cpu-pool model share
 * jobs, and each answer equals the one it gets alone; a job that fails fails every request in
 * it with the worker's code; async submissions that arrive together keep their own id,
 * priority and exactly-once result.
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { gql } from '../support/clients.ts';
import { addModel, linearOnnx, LINEAR_CONFIG, tempRepository } from '../support/model-repo.ts';
import { REPO_MODELS, uniquePrefix } from '../../harness/stack.ts';
import { useStack } from '../support/use-stack.ts';
import { until } from '../support/wait.ts';
import { bullPriority } from '../../core/prediction/queues.ts';
import { countResults } from '../support/results.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('edge');
const models = tempRepository();
// name-gender with its cache off, so every request reaches a worker.
cpSync(join(REPO_MODELS, 'name-gender'), join(models, 'ng'), { recursive: true });
const ngConfig = parse(readFileSync(join(models, 'ng', 'config.yaml'), 'utf8')) as Record<string, unknown>;
writeFileSync(join(models, 'ng', 'config.yaml'), stringify({ ...ngConfig, name: 'ng', cache: { enabled: false } }));
// Batches at the edge, but its graph takes 4 values a row: rows of 5 fail inside onnxruntime.
addModel(models, 'flex', '1', linearOnnx(), {
  ...LINEAR_CONFIG,
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, -1] }],
  batching: { policy: 'fixed', maxBatchSize: 32, maxDelayMs: 5, sloMs: 50 },
});
const stack = useStack({ redisUrl, prefix, models, env: { BATCHLINE_MAINTENANCE: 'false' } }, ['cpu']);

const PREDICT =
  'query($m: String!, $i: PredictionInput!) { predict(model: $m, input: $i) { label probabilities { label probability } batchRows } }';
const NAMES = ['Maria', 'John', 'Aiko', 'Pedro', 'Olga', 'Sven', 'Fatima', 'Liam', 'Chen', 'Zara', 'Ivan', 'Noor'];

/** Jobs the API sent for synchronous requests of `model` (its edge batches), from its own /metrics. */
async function jobsSent(model: string): Promise<number> {
  const text = await (await fetch(stack.api.url.replace('/graphql', '/metrics'))).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith('batchline_edge_batch_rows_count') && l.includes(`model="${model}"`))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

type Answer = { label: string; probabilities: { label: string; probability: number }[]; batchRows: number };

describe('synchronous requests batch at the edge, in the cpu pool too', () => {
  it('concurrent requests are served by fewer jobs than requests, and each answer equals its unbatched answer', async () => {
    const alone = new Map<string, Answer>();
    for (const name of NAMES) {
      const r = await gql<{ predict: Answer }>(stack.api.url, PREDICT, { m: 'ng', i: { text: name } });
      expect(r.body.errors).toBeUndefined();
      alone.set(name, r.body.data!.predict);
    }
    const before = await jobsSent('ng');
    const names = Array.from({ length: 48 }, (_, k) => NAMES[k % NAMES.length]);
    const together = await Promise.all(
      names.map((name) => gql<{ predict: Answer }>(stack.api.url, PREDICT, { m: 'ng', i: { text: name } })),
    );
    const jobs = (await jobsSent('ng')) - before;
    expect(jobs).toBeGreaterThan(0);
    expect(jobs).toBeLessThan(names.length);
    expect(together.some((r) => r.body.data!.predict.batchRows > 1)).toBe(true);
    together.forEach((r, k) => {
      const got = r.body.data!.predict;
      const want = alone.get(names[k])!;
      expect(got.label).toBe(want.label);
      got.probabilities.forEach((p, c) => {
        expect(p.label).toBe(want.probabilities[c].label);
        expect(p.probability).toBeCloseTo(want.probabilities[c].probability, 5);
      });
    });
  });

  it('a job that fails in the worker fails every request in it with the worker’s code, once each', async () => {
    const before = await jobsSent('flex');
    const runs = await Promise.all(
      Array.from({ length: 24 }, (_, k) =>
        gql(stack.api.url, 'query($i: PredictionInput!) { predict(model: "flex", input: $i) { outputs { data } } }', {
          i: { tensors: [{ name: 'x', shape: [1, 5], datatype: 'FP32', data: [k, 1, 2, 3, 4] }] },
        }),
      ),
    );
    expect(runs.map((r) => [r.status, r.body.errors?.length, r.body.errors?.[0]?.extensions?.code])).toEqual(
      runs.map(() => [500, 1, 'INFERENCE_FAILED']),
    );
    expect((await jobsSent('flex')) - before).toBeLessThan(runs.length);
  });
});

describe('asynchronous submissions that arrive together', () => {
  let listener: { close(): void };
  const published = new Map<string, number>();
  beforeAll(async () => {
    listener = await countResults(redisUrl, prefix, published);
  });
  afterAll(() => listener?.close());

  it('each keeps its own id, priority and exactly-once result', async () => {
    const worker = stack.workers[0];
    worker.proc.kill('SIGSTOP');
    let ids: string[];
    const priorities = Array.from({ length: 30 }, (_, k) => 1 + (k % 10));
    try {
      const subs = await Promise.all(
        priorities.map((p, k) =>
          gql<{ submitPrediction: { id: string } }>(
            stack.api.url,
            'mutation($i: PredictionInput!, $p: Int) { submitPrediction(model: "ng", input: $i, priority: $p) { id } }',
            { i: { text: `${NAMES[k % NAMES.length]}x${k}` }, p },
          ),
        ),
      );
      ids = subs.map((s) => s.body.data!.submitPrediction.id);
      expect(new Set(ids).size).toBe(ids.length);
      const queue = new Queue('cpu', { connection: { url: redisUrl }, prefix });
      try {
        // Submissions of one priority may share a job (coalesced); each is in one job of its own priority.
        const jobs = (await queue.getJobs(['prioritized', 'wait', 'active'])).filter(Boolean);
        const priorityOf = new Map(
          jobs.flatMap((j) =>
            ((j.data.parts as { id: string }[] | undefined) ?? [{ id: j.data.id as string }]).map((p) => [p.id, j.opts.priority]),
          ),
        );
        expect(ids.map((id) => priorityOf.get(id))).toEqual(priorities.map((p) => bullPriority(p)));
      } finally {
        await queue.close();
      }
    } finally {
      worker.proc.kill('SIGCONT');
    }
    await until(() => ids.every((id) => published.has(id)), 'every result');
    const polled = await Promise.all(
      ids.map((id) =>
        gql<{ prediction: { status: string; result: { label: string } } }>(
          stack.api.url,
          'query($id: ID!) { prediction(id: $id) { status result { label } } }',
          { id },
        ),
      ),
    );
    expect(polled.every((p) => p.body.data!.prediction.status === 'COMPLETED')).toBe(true);
    expect([...ids].map((id) => published.get(id))).toEqual(ids.map(() => 1));
  });
});
