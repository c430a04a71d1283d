/**
 * Periodic jobs on BullMQ job schedulers: registered once however many API processes run,
 * and the model repository poll loads a new version without a restart while work on the
 * old version still finishes on it.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { encodeDenseModel } from '../../scripts/models/onnx-writer.ts';
import { gql } from '../support/clients.ts';
import { addModel, linearOnnx, LINEAR_CONFIG, tempRepository } from '../support/model-repo.ts';
import { dropPrefix, startApi, startWorker, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('reload');
const models = tempRepository();
addModel(models, 'linear', '1', linearOnnx(), LINEAR_CONFIG);
// Accepts any row width; the graph takes 4, so other widths fail in onnxruntime (a failed job).
addModel(models, 'flex', '1', linearOnnx(), { ...LINEAR_CONFIG, inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, -1] }] });
// Results (and failed jobs) live one second here, so housekeeping has something to remove.
// Housekeeping only when the test asks: a scheduled run could remove the failed job first.
const opts = {
  redisUrl,
  prefix,
  models,
  env: { BATCHLINE_POLL_MODELS_CRON: '* * * * * *', BATCHLINE_RESULT_TTL_SECONDS: '1', BATCHLINE_HOUSEKEEPING_CRON: '0 0 0 1 1 *' },
};
let api: RunningApi;
let second: RunningApi;
let worker: Child;

beforeAll(async () => {
  worker = await startWorker('cpu', opts);
  api = await startApi(opts);
  second = await startApi(opts);
});

afterAll(async () => {
  await api?.close();
  await second?.close();
  await worker?.stop();
  await dropPrefix(redisUrl, prefix);
});

const PREDICT =
  'query($v: String) { predict(model: "linear", version: $v, input: { tensors: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 1, 1, 1] }] }) { version outputs { data } } }';

describe('periodic jobs', () => {
  it('registers the four job schedulers once, though two API processes start', async () => {
    const queue = new Queue('maintenance', { connection: { url: redisUrl }, prefix });
    await until(async () => (await queue.getJobSchedulersCount()) === 4, 'the schedulers');
    const schedulers = await queue.getJobSchedulers();
    expect(schedulers.map((s) => s.key ?? s.name).sort()).toEqual(['drift-monitor', 'housekeeping', 'poll-models', 'rollout-gates']);
    expect(schedulers.find((s) => (s.key ?? s.name) === 'poll-models')!.pattern).toBe('* * * * * *');
    await queue.close();
  });

  it('loads a version dropped into the repository without a restart, and the default switches to it', async () => {
    const v1 = await gql<{ predict: { version: string; outputs: { data: number[] }[] } }>(api.url, PREDICT, {});
    expect(v1.body.data!.predict.version).toBe('1');

    // Version 2: the same graph with every weight doubled.
    const dir = join(models, 'linear', '2');
    mkdirSync(dir, { recursive: true });
    const w = Float32Array.from({ length: 12 }, (_, i) => (i - 6) / 2);
    writeFileSync(
      join(dir, 'model.onnx.tmp'),
      encodeDenseModel({
        graphName: 'linear',
        inputName: 'x',
        outputName: 'y',
        softmax: false,
        layers: [{ inFeatures: 4, outFeatures: 3, weight: w, bias: Float32Array.from([0.5, -1, 2]), activation: 'none' }],
      }),
    );
    // Appear atomically, as a deployment would (write, then rename).
    renameSync(join(dir, 'model.onnx.tmp'), join(dir, 'model.onnx'));

    // Each API process rescans on its own; the predictions below go to `api`, so wait for both.
    const serves2 = async (url: string): Promise<boolean> => {
      const r = await gql<{ models: { version: string; ready: boolean }[] }>(url, '{ models { version ready } }');
      return r.body.data!.models.some((m) => m.version === '2' && m.ready);
    };
    await until(async () => (await serves2(second.url)) && (await serves2(api.url)), 'version 2 to be served by both API processes');
    const v2 = await gql<{ predict: { version: string; outputs: { data: number[] }[] } }>(api.url, PREDICT, {});
    expect(v2.body.errors).toBeUndefined();
    expect(v2.body.data!.predict.version).toBe('2');
    expect(v2.body.data!.predict.outputs[0].data).not.toEqual(v1.body.data!.predict.outputs[0].data);
    // The old version is still served to whoever asks for it by name.
    const old = await gql<{ predict: { version: string; outputs: { data: number[] }[] } }>(api.url, PREDICT, { v: '1' });
    expect(old.body.data!.predict.outputs[0].data).toEqual(v1.body.data!.predict.outputs[0].data);
  });

  it('housekeeping (run now by an admin) removes failed jobs older than the result TTL', async () => {
    const t = await gql<{ submitPrediction: { id: string } }>(
      api.url,
      'mutation { submitPrediction(model: "flex", input: { tensors: [{ name: "x", shape: [1, 5], datatype: "FP32", data: [1, 2, 3, 4, 5] }] }) { id } }',
    );
    const id = t.body.data!.submitPrediction.id;
    const queue = new Queue('cpu', { connection: { url: redisUrl }, prefix });
    try {
      await until(async () => (await queue.getJobState(id)) === 'failed', 'the job to fail');
      // A deliberate sleep, not a wait for a condition: the failed job must grow older than the 1 s TTL.
      await new Promise((r) => setTimeout(r, 1100));
      const r = await gql<{ runMaintenance: string }>(api.url, 'mutation { runMaintenance(task: "housekeeping") }');
      expect(r.body.errors).toBeUndefined();
      expect(JSON.parse(r.body.data!.runMaintenance).failedJobsRemoved).toBeGreaterThanOrEqual(1);
      expect(await queue.getJob(id)).toBeUndefined();
    } finally {
      await queue.close();
    }
  });
});
