/**
 * Predictions on unseen inputs follow the training distribution: every held-out name goes
 * through the API (real queue, real worker, real onnxruntime), then
 *  - Pearson's chi-square goodness of fit of the predicted class counts against the
 *    training class distribution must not reject at alpha = 0.01, and
 *  - accuracy must equal the offline held-out accuracy recorded when the model was built.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, inject, it } from 'vitest';
import { loadNameGenderSplit } from '../../scripts/models/names-dataset.ts';
import { chiSquareGoodnessOfFit } from '../../scripts/models/chi-square.ts';
import { gql } from '../support/clients.ts';
import { uniquePrefix } from '../../harness/stack.ts';
import { useStack } from '../support/use-stack.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('stat');
const opts = { redisUrl, prefix, env: { BATCHLINE_CACHE_MAX_ENTRIES: '1' } };
const metrics = JSON.parse(readFileSync(new URL('../../models/name-gender/1/metrics.json', import.meta.url), 'utf8')) as {
  heldOutAccuracy: number;
  trainingClassDistribution: Record<string, number>;
};
const stack = useStack(opts, ['cpu']);

describe('name-gender on held-out names, through the API', () => {
  it('predicts the training class distribution (chi-square, alpha 0.01) at the offline accuracy', async () => {
    const { holdout } = loadNameGenderSplit();
    expect(holdout.length).toBeGreaterThanOrEqual(1000);
    const predicted: string[] = [];
    const CHUNK = 100;
    for (let i = 0; i < holdout.length; i += CHUNK) {
      const texts = holdout.slice(i, i + CHUNK).map((h) => h.name);
      const r = await gql<{ predict: { predictions: { label: string }[] } }>(
        stack.api.url,
        'query($t: [String!]!) { predict(model: "name-gender", input: { texts: $t }) { predictions { label } } }',
        { t: texts },
      );
      expect(r.body.errors).toBeUndefined();
      predicted.push(...r.body.data!.predict.predictions.map((p) => p.label));
    }
    expect(predicted).toHaveLength(holdout.length);

    const counts = { female: 0, male: 0 };
    let correct = 0;
    predicted.forEach((label, i) => {
      counts[label as 'female' | 'male']++;
      if (label === holdout[i].label) correct++;
    });
    const test = chiSquareGoodnessOfFit(counts, metrics.trainingClassDistribution, 0.01);
    console.log(
      `held-out n=${holdout.length} predicted=${JSON.stringify(counts)} chi2=${test.statistic.toFixed(3)} p=${test.pValue.toFixed(3)} accuracy=${(correct / holdout.length).toFixed(4)}`,
    );
    expect(test.rejected).toBe(false);
    // Same model, same features: the served accuracy equals the offline one (float noise aside).
    expect(Math.abs(correct / holdout.length - metrics.heldOutAccuracy)).toBeLessThan(0.002);
  });

  it('would reject a skewed prediction mix (the test has power)', () => {
    const skewed = chiSquareGoodnessOfFit({ female: 1000, male: 601 }, metrics.trainingClassDistribution, 0.01);
    expect(skewed.rejected).toBe(true);
  });
});
