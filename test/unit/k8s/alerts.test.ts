/**
 * The rendered PrometheusRule, checked by Prometheus's own tool: `promtool check rules` parses
 * every expression and template, and `promtool test rules` evaluates the main alerts on
 * synthetic series (firing when they should, quiet when they should not). promtool comes with
 * Debian's `prometheus` package; .ci/run installs it when it is missing.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { renderManifests } from '../../../k8s/render.ts';
import { REFUSAL_CODES, FAILURE_CODES, type AlertRule } from '../../../k8s/render/monitoring.ts';
import { exampleDoc, load, set } from './manifests.ts';

const run = promisify(execFile);

/** The PrometheusRule's groups of a ModelServer document, as a Prometheus rule file. */
function ruleFile(doc: unknown): { groups: { name: string; rules: AlertRule[] }[] } {
  const rule = renderManifests(load(doc)).find((m) => m.kind === 'PrometheusRule') as { spec: { groups: never } } | undefined;
  if (!rule) throw new Error('no PrometheusRule rendered');
  return { groups: rule.spec.groups };
}

async function promtool(...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run('promtool', args, { timeout: 60_000 });
    return { code: 0, out: stdout + stderr };
  } catch (e) {
    const err = e as { code?: number | string; stdout?: string; stderr?: string };
    if (err.code === 'ENOENT') throw new Error('promtool is not installed: apt-get install prometheus (.ci/run does it)');
    return { code: Number(err.code), out: `${err.stdout ?? ''}${err.stderr ?? ''}` };
  }
}

type Series = { series: string; values: string };
type Expected = { labels: Record<string, string>; value?: string };
type Case = { name: string; series: Series[]; alert: string; at: string; expect: Expected[] };

const NS = 'namespace="ml-serving"';
const API = `${NS},job="batchline-api"`;
const WORKER = `${NS},job="batchline-worker-cpu"`;

// The cpu-only example (namespace ml-serving, one cpu pool); `minutes` of one-minute samples.
const cases: Case[] = [
  {
    name: 'the API down for 2 minutes',
    series: [{ series: `up{${API},pod="a"}`, values: '1 1 0x10' }],
    alert: 'BatchlineAPIDown',
    at: '5m',
    expect: [{ labels: { severity: 'critical', namespace: 'ml-serving', job: 'batchline-api' } }],
  },
  {
    name: 'one API replica of two down',
    series: [
      { series: `up{${API},pod="a"}`, values: '1 1 0x10' },
      { series: `up{${API},pod="b"}`, values: '1x12' },
    ],
    alert: 'BatchlineAPIDown',
    at: '5m',
    expect: [],
  },
  {
    name: 'no API scraped at all',
    series: [{ series: `up{${NS},job="other"}`, values: '1x10' }],
    alert: 'BatchlineAPIDown',
    at: '5m',
    expect: [{ labels: { severity: 'critical', namespace: 'ml-serving', job: 'batchline-api' } }],
  },
  {
    name: 'the cpu pool without a live worker',
    series: [{ series: `batchline_workers{${API},pod="a",pool="cpu"}`, values: '2 1 0x10' }],
    alert: 'BatchlinePoolWithoutWorkers',
    at: '8m',
    expect: [{ labels: { severity: 'critical', namespace: 'ml-serving', pool: 'cpu' } }],
  },
  {
    name: 'a pool that has workers',
    series: [{ series: `batchline_workers{${API},pod="a",pool="cpu"}`, values: '1x10' }],
    alert: 'BatchlinePoolWithoutWorkers',
    at: '8m',
    expect: [],
  },
  {
    name: 'a queue over 80% of its maximum',
    series: [
      { series: `batchline_queue_depth{${API},pod="a",pool="cpu"}`, values: '100 8500x10' },
      { series: `batchline_queue_depth{${API},pod="b",pool="cpu"}`, values: '100 8400x10' },
      { series: `batchline_queue_max_depth{${API},pod="a",pool="cpu"}`, values: '10000x11' },
      { series: `batchline_queue_max_depth{${API},pod="b",pool="cpu"}`, values: '10000x11' },
    ],
    alert: 'BatchlineQueueNearlyFull',
    at: '7m',
    expect: [{ labels: { severity: 'warning', namespace: 'ml-serving', pool: 'cpu' } }],
  },
  {
    name: 'a queue at 70%',
    series: [
      { series: `batchline_queue_depth{${API},pod="a",pool="cpu"}`, values: '7000x10' },
      { series: `batchline_queue_max_depth{${API},pod="a",pool="cpu"}`, values: '10000x10' },
    ],
    alert: 'BatchlineQueueNearlyFull',
    at: '8m',
    expect: [],
  },
  {
    // Per minute: 100 batches of mlp-bench, 10 within 50 ms, the rest within 100 ms; name-gender all within 5 ms.
    name: "a model's p99 over its SLO, beside one within it",
    series: [
      { series: `batchline_batch_inference_seconds_bucket{${WORKER},model="mlp-bench",le="0.025"}`, values: '0+5x15' },
      { series: `batchline_batch_inference_seconds_bucket{${WORKER},model="mlp-bench",le="0.05"}`, values: '0+10x15' },
      { series: `batchline_batch_inference_seconds_bucket{${WORKER},model="mlp-bench",le="0.1"}`, values: '0+100x15' },
      { series: `batchline_batch_inference_seconds_bucket{${WORKER},model="mlp-bench",le="+Inf"}`, values: '0+100x15' },
      { series: `batchline_model_slo_seconds{${WORKER},model="mlp-bench",version="1"}`, values: '0.05x15' },
      { series: `batchline_batch_inference_seconds_bucket{${WORKER},model="name-gender",le="0.005"}`, values: '0+100x15' },
      { series: `batchline_batch_inference_seconds_bucket{${WORKER},model="name-gender",le="+Inf"}`, values: '0+100x15' },
      { series: `batchline_model_slo_seconds{${WORKER},model="name-gender",version="1"}`, values: '0.05x15' },
    ],
    alert: 'BatchlineModelOverSLO',
    at: '10m',
    expect: [{ labels: { severity: 'warning', namespace: 'ml-serving', model: 'mlp-bench' }, value: '99.44ms' }],
  },
  {
    name: '10% of requests failing',
    series: [
      { series: `batchline_requests_total{${API},model="mlp-bench",operation="predict",outcome="ok"}`, values: '0+90x15' },
      { series: `batchline_requests_total{${API},model="mlp-bench",operation="predict",outcome="INFERENCE_FAILED"}`, values: '0+10x15' },
      { series: `batchline_requests_total{${API},model="mlp-bench",operation="predict",outcome="BAD_USER_INPUT"}`, values: '0+50x15' },
    ],
    alert: 'BatchlineErrors',
    at: '10m',
    expect: [{ labels: { severity: 'critical', namespace: 'ml-serving', model: 'mlp-bench' }, value: '6.667%' }],
  },
  {
    name: 'client errors only',
    series: [
      { series: `batchline_requests_total{${API},model="mlp-bench",operation="predict",outcome="ok"}`, values: '0+10x15' },
      { series: `batchline_requests_total{${API},model="mlp-bench",operation="predict",outcome="BAD_USER_INPUT"}`, values: '0+90x15' },
    ],
    alert: 'BatchlineErrors',
    at: '10m',
    expect: [],
  },
  {
    name: 'a fifth of requests refused for capacity',
    series: [
      { series: `batchline_requests_total{${API},model="name-gender",operation="predict",outcome="ok"}`, values: '0+80x15' },
      { series: `batchline_requests_total{${API},model="name-gender",operation="submit",outcome="QUEUE_FULL"}`, values: '0+20x15' },
    ],
    alert: 'BatchlineRefusals',
    at: '10m',
    expect: [{ labels: { severity: 'warning', namespace: 'ml-serving', model: 'name-gender' }, value: '20%' }],
  },
  {
    name: 'drift under alpha for 15 minutes',
    series: [
      { series: `batchline_drift_p_value{${API},pod="a",model="name-gender",version="1"}`, values: '0.5 0.001x20' },
      { series: `batchline_drift_alpha{${API},pod="a",model="name-gender",version="1"}`, values: '0.01x21' },
    ],
    alert: 'BatchlineDrift',
    at: '17m',
    expect: [{ labels: { severity: 'warning', namespace: 'ml-serving', model: 'name-gender', version: '1' }, value: '0.001' }],
  },
  {
    name: 'a p-value over alpha',
    series: [
      { series: `batchline_drift_p_value{${API},pod="a",model="name-gender",version="1"}`, values: '0.2x20' },
      { series: `batchline_drift_alpha{${API},pod="a",model="name-gender",version="1"}`, values: '0.01x20' },
    ],
    alert: 'BatchlineDrift',
    at: '17m',
    expect: [],
  },
  {
    name: 'a worker that lost Redis',
    series: [
      { series: `batchline_redis_up{${API},pod="a"}`, values: '1x10' },
      { series: `batchline_redis_up{${WORKER},pod="w1"}`, values: '1 1 0x8' },
      { series: `batchline_redis_up{${WORKER},pod="w2"}`, values: '1x10' },
    ],
    alert: 'BatchlineRedisUnreachable',
    at: '5m',
    expect: [{ labels: { severity: 'critical', namespace: 'ml-serving', job: 'batchline-worker-cpu' } }],
  },
  {
    name: 'stalled jobs recovered',
    series: [{ series: `batchline_stalled_jobs_total{${WORKER},pod="w1",pool="cpu"}`, values: '0 0 0 3 3 3' }],
    alert: 'BatchlineStalledJobs',
    at: '5m',
    expect: [{ labels: { severity: 'warning', namespace: 'ml-serving', pool: 'cpu' } }],
  },
];

/** An alert's annotations as Prometheus renders them: `$labels.x` from the labels, `$value` as the case says. */
function annotations(rule: AlertRule, e: Expected): Record<string, string> {
  return Object.fromEntries(
    Object.entries(rule.annotations ?? {}).map(([k, v]) => [
      k,
      v.replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, l: string) => e.labels[l] ?? '').replace(/\{\{ \$value[^}]*\}\}/g, e.value ?? ''),
    ]),
  );
}

describe('the rendered alerts', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'batchline-alerts-'));
  });

  it.each(['cpu-only.yaml', 'gpu.yaml'])('%s: promtool check rules accepts every rule and template', async (example) => {
    const file = join(dir, `check-${example}`);
    writeFileSync(file, stringify(ruleFile(exampleDoc(example))));
    const { code, out } = await promtool('check', 'rules', file);
    expect(out).toMatch(/SUCCESS: \d+ rules found/);
    expect(code, out).toBe(0);
  });

  it('promtool check rules does fail a broken expression (the check can fail)', async () => {
    const rules = ruleFile(exampleDoc('cpu-only.yaml'));
    rules.groups[0].rules[0].expr = 'sum(rate(batchline_requests_total[5m]) > ';
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, stringify(rules));
    const { code, out } = await promtool('check', 'rules', file);
    expect(code, out).not.toBe(0);
  });

  it('lists its failures and refusals from the error registry', () => {
    expect(FAILURE_CODES).toEqual(expect.arrayContaining(['INFERENCE_FAILED', 'INTERNAL_SERVER_ERROR', 'DEADLINE_EXCEEDED', 'WORK_LOST']));
    expect(REFUSAL_CODES).toEqual(expect.arrayContaining(['QUEUE_FULL', 'SERVICE_UNAVAILABLE', 'MODEL_NOT_READY']));
    expect(FAILURE_CODES.filter((c) => REFUSAL_CODES.includes(c))).toEqual([]);
  });

  it('promtool test rules: each main alert fires on its synthetic series, and stays quiet beside them', async () => {
    const rules = ruleFile(exampleDoc('cpu-only.yaml'));
    const byName = new Map(rules.groups[0].rules.map((r) => [r.alert!, r]));
    writeFileSync(join(dir, 'rules.yaml'), stringify(rules));
    const tests = cases.map((c) => ({
      interval: '1m',
      input_series: c.series,
      alert_rule_test: [
        {
          eval_time: c.at,
          alertname: c.alert,
          exp_alerts: c.expect.map((e) => ({ exp_labels: e.labels, exp_annotations: annotations(byName.get(c.alert)!, e) })),
        },
      ],
    }));
    writeFileSync(join(dir, 'tests.yaml'), stringify({ rule_files: ['rules.yaml'], evaluation_interval: '1m', tests }));
    const { code, out } = await promtool('test', 'rules', join(dir, 'tests.yaml'));
    expect(code, `${out}\n(cases in order: ${cases.map((c) => c.name).join('; ')})`).toBe(0);
    expect(out).toContain('SUCCESS');
  });

  it('a pool that scales to zero alerts only when work waits for it', async () => {
    const doc = exampleDoc('cpu-only.yaml');
    set(doc, 'spec.pools.cpu.autoscaling.minReplicas', 0);
    const rules = ruleFile(doc);
    const rule = rules.groups[0].rules.find((r) => r.alert === 'BatchlinePoolWithoutWorkers')!;
    writeFileSync(join(dir, 'zero.yaml'), stringify(rules));
    const workers = { series: `batchline_workers{${API},pod="a",pool="cpu"}`, values: '0x20' };
    const labels = { severity: 'critical', namespace: 'ml-serving', pool: 'cpu' };
    const tests = [
      { depth: '0x20', expect: [] },
      { depth: '0 0 5x18', expect: [{ exp_labels: labels, exp_annotations: annotations(rule, { labels }) }] },
    ].map((t) => ({
      interval: '1m',
      input_series: [workers, { series: `batchline_queue_depth{${API},pod="a",pool="cpu"}`, values: t.depth }],
      alert_rule_test: [{ eval_time: '15m', alertname: 'BatchlinePoolWithoutWorkers', exp_alerts: t.expect }],
    }));
    writeFileSync(join(dir, 'zero-tests.yaml'), stringify({ rule_files: ['zero.yaml'], evaluation_interval: '1m', tests }));
    const { code, out } = await promtool('test', 'rules', join(dir, 'zero-tests.yaml'));
    expect(code, out).toBe(0);
  });

  it('every alert has a runbook entry in k8s/README.md', () => {
    const readme = readFileSync(new URL('../../../k8s/README.md', import.meta.url), 'utf8');
    for (const r of ruleFile(exampleDoc('gpu.yaml')).groups[0].rules) {
      expect(readme, `k8s/README.md has no heading for ${r.alert}`).toMatch(new RegExp(`^#### ${r.alert}$`, 'm'));
      expect(r.labels?.severity).toMatch(/^(critical|warning)$/);
      expect(r.annotations?.summary).toBeTruthy();
      expect(r.annotations?.runbook_url).toBe(`k8s/README.md#${r.alert!.toLowerCase()}`);
    }
  });
});
