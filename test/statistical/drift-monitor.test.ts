/**
 * The statistical test, running in production: the drift monitor (a periodic job) tests
 * the classes predicted on recent traffic against the training distribution. Held-out
 * names pass; a stream of only female names is flagged as drift, in the query, in the
 * metrics and in the log.
 */
import { describe, expect, inject, it } from 'vitest';
import { loadNameGenderSplit } from '../../scripts/models/names-dataset.ts';
import { gql } from '../support/clients.ts';
import { uniquePrefix } from '../../harness/stack.ts';
import { useStack } from '../support/use-stack.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('drift');
// The monitor runs every second here (every minute by default).
const opts = { redisUrl, prefix, env: { BATCHLINE_DRIFT_CRON: '* * * * * *', BATCHLINE_DRIFT_MIN_SAMPLES: '500' } };
const stack = useStack(opts, ['cpu']);

interface Report {
  status: string;
  samples: number;
  pValue: number;
  chiSquare: number;
  observed: { label: string; count: number }[];
}
const DRIFT =
  '{ modelDrift(model: "name-gender") { status samples pValue chiSquare degreesOfFreedom observed { label count } expected { label count } } }';

async function send(names: string[]): Promise<void> {
  for (let i = 0; i < names.length; i += 100) {
    const r = await gql(
      stack.api.url,
      'query($t: [String!]!) { predict(model: "name-gender", input: { texts: $t }) { predictions { label } } }',
      { t: names.slice(i, i + 100) },
    );
    expect(r.body.errors).toBeUndefined();
  }
}

async function reportWith(samples: number): Promise<Report> {
  let rep: Report | null | undefined;
  await until(
    async () => {
      rep = (await gql<{ modelDrift: Report | null }>(stack.api.url, DRIFT)).body.data?.modelDrift;
      return !!rep && rep.samples >= samples;
    },
    () => `a drift report with ${samples} samples (last: ${JSON.stringify(rep)})`,
    30_000,
    200,
  );
  return rep!;
}

describe('live drift monitor', () => {
  const { holdout, train } = loadNameGenderSplit();

  it('finds no drift in held-out traffic, whose predictions follow the training distribution', async () => {
    await send(holdout.map((h) => h.name));
    const rep = await reportWith(holdout.length);
    expect(rep.samples).toBe(holdout.length);
    expect(rep.status).toBe('OK');
    expect(rep.pValue).toBeGreaterThan(0.01);
  });

  it('flags drift when the traffic turns to female names only, in the query and the metrics', async () => {
    const female = train
      .filter((t) => t.label === 'female')
      .slice(0, 800)
      .map((t) => t.name);
    await send(female);
    const rep = await reportWith(holdout.length + female.length);
    expect(rep.status).toBe('DRIFT');
    expect(rep.pValue).toBeLessThan(0.01);
    const metrics = await (await fetch(stack.api.url.replace('/graphql', '/metrics'))).text();
    const line = metrics.split('\n').find((l) => l.startsWith('batchline_drift_p_value{') && l.includes('model="name-gender"'));
    expect(line).toBeDefined();
    expect(Number(line!.split(' ').pop())).toBeLessThan(0.01);
  });
});
