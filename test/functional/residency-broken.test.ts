/**
 * Under a model memory budget a version loads on demand, after the repository check: a file
 * that breaks in between (overwritten here after the worker started) fails its requests with
 * MODEL_LOAD_FAILED (the reason in the worker's log), every time and at once, and the other
 * models keep serving.
 */
import { writeFileSync } from 'node:fs';
import { describe, expect, inject, it } from 'vitest';
import { gql } from '../support/clients.ts';
import { addModel, linearOnnx, LINEAR_BIAS, LINEAR_CONFIG, LINEAR_WEIGHT, tempRepository } from '../support/model-repo.ts';
import { uniquePrefix } from '../../harness/stack.ts';
import { useStack } from '../support/use-stack.ts';

const redisUrl = inject('redisUrl');
const models = tempRepository();
addModel(models, 'good', '1', linearOnnx(), LINEAR_CONFIG);
const broken = addModel(models, 'broken', '1', linearOnnx(), LINEAR_CONFIG);
const stack = useStack({
  redisUrl,
  prefix: uniquePrefix('residency-broken'),
  models,
  // No repository poll during the test: the worker finds the broken file itself, when it loads it.
  env: { BATCHLINE_WORKER_MODEL_MEMORY: String(64 * 1024 * 1024), BATCHLINE_POLL_MODELS_CRON: '0 0 0 1 1 *' },
});

const Q = (m: string): string =>
  `{ predict(model: "${m}", input: { tensors: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 0, 0, 0] }] }) { outputs { data } } }`;

describe('a version whose file breaks after the repository check', () => {
  it('fails with MODEL_LOAD_FAILED, its reason logged, and the other models are unaffected', async () => {
    writeFileSync(broken, Buffer.from('this is not an onnx model'));
    for (let n = 0; n < 2; n++) {
      const r = await gql(stack.api.url, Q('broken'));
      expect(r.status).toBe(500);
      expect(r.body.errors?.[0].extensions?.code).toBe('MODEL_LOAD_FAILED');
      expect(r.body.errors?.[0].message).toMatch(/^broken@1 failed to load in the worker/);
      // The runtime's own text (it names the file) stays in the worker's log.
      expect(r.body.errors?.[0].message).not.toContain(models);
    }
    const ok = await gql<{ predict: { outputs: { data: number[] }[] } }>(stack.api.url, Q('good'));
    expect(ok.body.errors).toBeUndefined();
    expect(ok.body.data!.predict.outputs[0].data).toEqual([0, 1, 2].map((o) => LINEAR_WEIGHT[o] + LINEAR_BIAS[o]));
    // Loaded once, refused after: the second request did not try again.
    expect(stack.workers[0].output().match(/"msg":"model version cannot be loaded"/g)).toHaveLength(1);
    expect(stack.workers[0].output()).toMatch(/"reason":"broken@1 failed to load: [^"]+"/);
  });
});
