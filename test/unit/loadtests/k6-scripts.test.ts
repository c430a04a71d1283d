/**
 * The k6 scripts in loadtests/ (issue 10, items 13-15), without a server: they parse as
 * ES2017 and compile with Babel 6 (what k6 before v0.53 compiles with), and lint refuses
 * newer syntax there; they import only
 * k6 modules that exist from v0.48; their options come from DURATION, RATE, VUS and friends,
 * keep every scenario and SLO threshold in a short run, put a count>0 guard on completed
 * predictions per scenario, exclude the open loop's warm-up from its thresholds; the text
 * input varies; the summary reports every threshold and p99. Scripts are evaluated by a
 * stand-in for k6's runtime (test/support/k6), with `__ENV` set as `k6 run -e` would.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as espree from 'espree';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { callExport, callHandleSummary, loadScript, type K6Options } from '../../support/k6/host.ts';
import { BUILTIN_METRICS } from '../../support/k6/runtime.ts';
import { failedThresholds, parseThresholdKey, summaryData } from '../../support/k6/thresholds.ts';

const DIR = fileURLToPath(new URL('../../../loadtests/', import.meta.url));
const SCRIPTS = readdirSync(DIR).filter((f) => f.endsWith('.js'));
const HTTP = `${DIR}predict-http.js`;
const WS = `${DIR}submit-subscribe-ws.js`;
const LIB = `${DIR}lib.js`;
const REST = `${DIR}infer-rest.js`;
const GRPC = `${DIR}infer-grpc.js`;

/** Babel 6 as k6 before v0.53 bundles it (babel-standalone 6.26): it turns ES modules into CommonJS for goja. */
const babel6 = createRequire(import.meta.url)('babel-standalone') as { transform(code: string, o: object): { code: string } };

/** k6 modules present in every release from v0.48 (k6/websockets, k6/timers and k6/experimental/* are not). */
const K6_MODULES_SINCE_048 = [
  'k6',
  'k6/http',
  'k6/ws',
  'k6/net/grpc',
  'k6/metrics',
  'k6/execution',
  'k6/encoding',
  'k6/crypto',
  'k6/data',
  'k6/html',
];

/** k6 duration strings in ms (only the forms the scripts emit). */
function ms(d: string | undefined): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s)$/.exec(d ?? '');
  if (!m) throw new Error(`not a k6 duration the scripts emit: ${d}`);
  return Number(m[1]) * (m[2] === 's' ? 1000 : 1);
}

function scenario(o: K6Options, name: string) {
  const s = o.scenarios?.[name];
  if (!s) throw new Error(`no scenario ${name} in ${Object.keys(o.scenarios ?? {}).join(', ')}`);
  return s;
}

describe('syntax: every k6 from v0.48 compiles the scripts (item 13)', () => {
  it('every script in loadtests/ parses as an ES2017 module', () => {
    expect(SCRIPTS).toEqual(
      expect.arrayContaining(['lib.js', 'predict-http.js', 'submit-subscribe-ws.js', 'infer-rest.js', 'infer-grpc.js']),
    );
    for (const file of SCRIPTS) {
      const code = readFileSync(DIR + file, 'utf8');
      expect(() => espree.parse(code, { ecmaVersion: 2017, sourceType: 'module' }), file).not.toThrow();
    }
  });

  it('Babel 6, which k6 v0.48-v0.52 compiles scripts with, compiles every script', () => {
    for (const file of SCRIPTS) {
      const code = readFileSync(DIR + file, 'utf8');
      const compile = () =>
        babel6.transform(code, {
          plugins: ['transform-es2015-modules-commonjs', 'transform-exponentiation-operator'],
          babelrc: false,
          retainLines: true,
          filename: file,
        }).code;
      expect(compile, file).not.toThrow();
      // What goja then runs is a CommonJS function body.
      expect(() => new Function('require', 'exports', 'module', compile()), file).not.toThrow();
    }
  });

  it('the scripts import only k6 modules that exist from v0.48, and files next to them', () => {
    for (const file of SCRIPTS) {
      const ast = espree.parse(readFileSync(DIR + file, 'utf8'), { ecmaVersion: 2017, sourceType: 'module' });
      const sources = ast.body.flatMap((n) =>
        (n.type === 'ImportDeclaration' || n.type === 'ExportNamedDeclaration' || n.type === 'ExportAllDeclaration') && n.source
          ? [String(n.source.value)]
          : [],
      );
      for (const s of sources) expect(K6_MODULES_SINCE_048.includes(s) || /^\.\/[\w-]+\.js$/.test(s), `${file} imports ${s}`).toBe(true);
    }
  });

  it('npm run lint fails on syntax newer than ES2017 in loadtests/', async () => {
    const eslint = new ESLint({ cwd: fileURLToPath(new URL('../../../', import.meta.url)) });
    const lint = async (code: string) => (await eslint.lintText(code, { filePath: `${DIR}probe.js` }))[0].messages;
    const newer: Record<string, string> = {
      'object spread': 'export const a = { ...__ENV };',
      'nullish coalescing': 'export const a = __ENV.A ?? 1;',
      'optional chaining': 'export const a = __ENV.A?.length;',
      'catch without a binding': 'try { JSON.parse("x"); } catch { /* */ }\nexport const a = 1;',
    };
    for (const [what, code] of Object.entries(newer)) {
      const messages = await lint(code);
      expect(
        messages.some((m) => m.fatal && /Parsing error/.test(m.message)),
        what,
      ).toBe(true);
    }
    // The probe itself is fine as ES2017, so the failures above are the syntax's.
    expect(await lint('export const a = Object.assign({}, __ENV);\nexport async function b() { return 2 ** 3; }\n')).toEqual([]);
  });
});

describe('options from the environment (item 15)', () => {
  it('DURATION, RATE and VUS shape the scenarios, and a short run keeps each one with its SLO thresholds', async () => {
    const defaults = (await loadScript(HTTP)).options;
    const short = (await loadScript(HTTP, { DURATION: '12s', RATE: '40', VUS: '3', SLO_MS: '80' })).options;
    for (const o of [defaults, short]) expect(Object.keys(o.scenarios ?? {}).sort()).toEqual(['closed', 'open', 'open_warmup']);

    expect(scenario(defaults, 'closed').stages).toEqual([
      { duration: '10s', target: 64 },
      { duration: '60s', target: 64 },
      { duration: '10s', target: 0 },
    ]);
    expect(scenario(short, 'closed').stages).toEqual([
      { duration: '2s', target: 3 },
      { duration: '12s', target: 3 },
      { duration: '2s', target: 0 },
    ]);
    expect(scenario(defaults, 'open')).toMatchObject({ executor: 'constant-arrival-rate', rate: 500, duration: '60s' });
    expect(scenario(short, 'open')).toMatchObject({ executor: 'constant-arrival-rate', rate: 40, duration: '12s' });
    expect(short.thresholds).toMatchObject({
      'http_req_duration{scenario:open}': ['p(99)<80'],
      'http_req_duration{scenario:closed}': ['p(95)<160'],
    });
    // The open loop starts after the closed loop (ramps, hold, grace) is over.
    const closed = scenario(short, 'closed');
    const closedEnd = ms(closed.startTime) + closed.stages!.reduce((t, s) => t + ms(s.duration), 0) + ms(closed.gracefulStop as string);
    expect(ms(scenario(short, 'open_warmup').startTime)).toBeGreaterThanOrEqual(closedEnd);

    const ws = (await loadScript(WS, { DURATION: '12s', VUS: '3', PER_CONNECTION: '5' })).options;
    expect(scenario(ws, 'subscribers').stages).toEqual([
      { duration: '2s', target: 3 },
      { duration: '12s', target: 3 },
      { duration: '2s', target: 0 },
    ]);
  });

  it('RAMP, WARMUP, PRE_ALLOCATED_VUS, MAX_VUS and SCENARIOS are read too', async () => {
    const o = (await loadScript(HTTP, { RAMP: '3s', WARMUP: '1500ms', PRE_ALLOCATED_VUS: '7', MAX_VUS: '9', SCENARIOS: 'open' })).options;
    expect(Object.keys(o.scenarios ?? {}).sort()).toEqual(['open', 'open_warmup']);
    expect(scenario(o, 'open_warmup')).toMatchObject({ startTime: '0s', duration: '1500ms', preAllocatedVUs: 7, maxVUs: 9 });
    expect(scenario(o, 'open').startTime).toBe('1500ms');
    expect(Object.keys(o.thresholds ?? {}).filter((k) => k.includes('scenario:closed'))).toEqual([]);
    const noWarmup = (await loadScript(HTTP, { WARMUP: '0' })).options;
    expect(Object.keys(noWarmup.scenarios ?? {}).sort()).toEqual(['closed', 'open']);
  });

  it('a malformed value stops the script at init and names the variable', async () => {
    await expect(loadScript(HTTP, { DURATION: 'ten seconds' })).rejects.toThrow(/DURATION must be a duration/);
    await expect(loadScript(HTTP, { RATE: '-5' })).rejects.toThrow(/RATE must be a number/);
    await expect(loadScript(WS, { VUS: 'many' })).rejects.toThrow(/VUS must be a number/);
    await expect(loadScript(HTTP, { SCENARIOS: 'closed,soak' })).rejects.toThrow(/SCENARIOS/);
    await expect(loadScript(HTTP, { INPUT: 'images' })).rejects.toThrow(/INPUT must be/);
  });

  it('every threshold names a metric the script creates or k6 builds in, and a scenario that exists', async () => {
    const cases: [string, Record<string, string>][] = [
      [HTTP, {}],
      [HTTP, { SCENARIOS: 'open', WARMUP: '0' }],
      [HTTP, { SCENARIOS: 'closed' }],
      [WS, {}],
    ];
    for (const [script, env] of cases) {
      const { options, definitions } = await loadScript(script, env);
      const keys = Object.keys(options.thresholds ?? {});
      expect(keys.length).toBeGreaterThan(0);
      for (const key of keys) {
        const { metric, tags } = parseThresholdKey(key);
        expect(metric in BUILTIN_METRICS || metric in definitions, `${key} in ${script}`).toBe(true);
        if (tags.scenario) expect(Object.keys(options.scenarios ?? {}), `${key} with ${JSON.stringify(env)}`).toContain(tags.scenario);
      }
    }
  });

  it('a run that completed no prediction fails: a count>0 threshold for every measured scenario', async () => {
    const http = (await loadScript(HTTP)).options;
    for (const name of ['closed', 'open']) expect(http.thresholds?.[`predictions_completed{scenario:${name}}`]).toEqual(['count>0']);
    const ws = (await loadScript(WS)).options;
    expect(ws.thresholds).toMatchObject({
      predictions_completed: ['count>0'],
      prediction_failures: ['count<1'],
      auth_rejected: ['count<1'],
    });

    // What k6 decides when nothing ran (as after `--duration`, which drops the scenarios): the
    // SLO thresholds pass on zero samples, and only the guards fail the run.
    const nothing = async (script: string, o: K6Options) =>
      failedThresholds(summaryData(o, { samples: [], definitions: (await loadScript(script)).definitions }));
    expect(await nothing(HTTP, http)).toEqual([
      'predictions_completed{scenario:closed} count>0',
      'predictions_completed{scenario:open} count>0',
    ]);
    expect(await nothing(WS, ws)).toEqual(['predictions_completed count>0']);
  });

  it("the open loop's warm-up runs at the same rate just before it, and no threshold counts it", async () => {
    for (const env of [{}, { DURATION: '12s', RATE: '40' }] as Record<string, string>[]) {
      const o = (await loadScript(HTTP, env)).options;
      const warmup = scenario(o, 'open_warmup');
      const open = scenario(o, 'open');
      expect(warmup).toMatchObject({ executor: 'constant-arrival-rate', rate: open.rate });
      expect(ms(warmup.startTime) + ms(warmup.duration)).toBe(ms(open.startTime));
      expect(Object.keys(o.thresholds ?? {}).filter((k) => k.includes('open_warmup'))).toEqual([]);
      // The open loop's latency threshold is tagged, so the warm-up's samples are not in it.
      expect(Object.keys(o.thresholds ?? {})).toContain('http_req_duration{scenario:open}');
    }
  });
});

describe('what the scripts send and report (items 14, 15)', () => {
  it('INPUT=names sends varied names, so a text model is measured, not its cache', async () => {
    const inputs = await callExport<{ text: string }>(LIB, { INPUT: 'names' }, 'input', 2000);
    const texts = inputs.map((i) => i.text);
    for (const t of texts) expect(t).toMatch(/^[A-Z][A-Za-z'-]+ [A-Z][A-Za-z'-]+$/);
    expect(new Set(texts).size).toBeGreaterThan(1980);
    // TEXT alone still sends one fixed text (a run of the cache, which the cached-share threshold reports).
    expect(new Set((await callExport<{ text: string }>(LIB, { TEXT: 'Maria' }, 'input', 5)).map((i) => i.text))).toEqual(
      new Set(['Maria']),
    );
  });

  it('both scripts fail a run in which the cache answered more than MAX_CACHED_RATE', async () => {
    for (const script of [HTTP, WS]) {
      expect((await loadScript(script)).options.thresholds?.prediction_cached).toEqual(['rate<0.05']);
      expect((await loadScript(script, { MAX_CACHED_RATE: '1' })).options.thresholds?.prediction_cached).toEqual(['rate<1']);
    }
  });

  it('the summary has p(99) and says PASS or FAIL for every threshold, with the value it judged', async () => {
    const { options, definitions } = await loadScript(HTTP);
    expect(options.summaryTrendStats).toContain('p(99)');
    // Samples as k6 would record them: the open loop answered within the SLO but the closed
    // loop completed nothing.
    const open = { scenario: 'open' };
    const samples = [
      ...Array.from({ length: 100 }, (_, i) => ({ metric: 'http_req_duration', value: i + 1, tags: open })),
      ...Array.from({ length: 100 }, () => ({ metric: 'predictions_completed', value: 1, tags: open })),
      ...Array.from({ length: 100 }, () => ({ metric: 'http_req_failed', value: 0, tags: open })),
      ...Array.from({ length: 100 }, () => ({ metric: 'iterations', value: 1, tags: open })),
    ];
    const out = await callHandleSummary(HTTP, {}, summaryData(options, { samples, definitions }));
    expect(Object.keys(out).sort()).toEqual(['predict-http-summary.json', 'stdout']);
    const text = out.stdout;
    const thresholdCount = Object.values(options.thresholds ?? {}).flat().length;
    expect(text.match(/^\s+(PASS|FAIL)\s/gm)).toHaveLength(thresholdCount);
    expect(text).toMatch(/PASS\s+http_req_duration\{scenario:open\}\s+p\(99\)<100\s+\(p\(99\)=99\.01\)/);
    expect(text).toMatch(/FAIL\s+predictions_completed\{scenario:closed\}\s+count>0\s+\(count=0\.00\)/);
    expect(text).toMatch(/1 of \d+ thresholds FAILED/);
    expect(text).toMatch(/http_req_duration\{scenario:open\}: 50\.50 \/ 95\.05 \/ 99\.01/);
    expect(JSON.parse(out['predict-http-summary.json']).metrics['http_req_duration{scenario:open}'].values['p(99)']).toBeCloseTo(99.01);
    expect(
      Object.keys(await callHandleSummary(HTTP, { SUMMARY_FILE: 'out/run.json' }, summaryData(options, { samples, definitions }))),
    ).toContain('out/run.json');
  });
});

describe('the inference protocol scripts (issue 25)', () => {
  it.each([
    [REST, 'http_req_duration'],
    [GRPC, 'grpc_req_duration'],
  ])('%s: the closed and open loops with their SLOs, count guards and the warm-up left out', async (script, duration) => {
    const o = (await loadScript(script, { DURATION: '12s', RATE: '40', VUS: '3', SLO_MS: '80' })).options;
    expect(Object.keys(o.scenarios ?? {})).toEqual(['closed', 'open_warmup', 'open']);
    expect(scenario(o, 'open')).toMatchObject({ executor: 'constant-arrival-rate', rate: 40, duration: '12s' });
    expect(scenario(o, 'closed').stages?.[1]).toEqual({ duration: '12s', target: 3 });
    expect(o.thresholds).toMatchObject({
      [`${duration}{scenario:open}`]: ['p(99)<80'],
      [`${duration}{scenario:closed}`]: ['p(95)<160'],
      'predictions_completed{scenario:open}': ['count>0'],
      'predictions_completed{scenario:closed}': ['count>0'],
      infer_errors: ['count<1'],
      checks: ['rate>0.99'],
    });
    expect(Object.keys(o.thresholds ?? {}).filter((k) => k.includes('open_warmup'))).toEqual([]);
    expect(Object.keys((await loadScript(script, { SCENARIOS: 'open' })).options.scenarios ?? {})).toEqual(['open_warmup', 'open']);
    // Nothing ran: only the guards fail.
    const { definitions } = await loadScript(script);
    expect(failedThresholds(summaryData((await loadScript(script)).options, { samples: [], definitions }))).toEqual([
      'predictions_completed{scenario:closed} count>0',
      'predictions_completed{scenario:open} count>0',
    ]);
  });

  it('every threshold names a metric the script creates or k6 builds in', async () => {
    for (const script of [REST, GRPC]) {
      const { options, definitions } = await loadScript(script);
      for (const key of Object.keys(options.thresholds ?? {})) {
        const { metric } = parseThresholdKey(key);
        expect(BUILTIN_METRICS[metric] ?? definitions[metric], `${script}: ${key}`).toBeDefined();
      }
    }
  });

  it('a malformed value stops the script at init and names the variable', async () => {
    await expect(loadScript(REST, { ENCODING: 'base64' })).rejects.toThrow(/ENCODING must be binary or json/);
    await expect(loadScript(GRPC, { SCENARIOS: 'soak' })).rejects.toThrow(/SCENARIOS/);
    await expect(loadScript(GRPC, { CALL_TIMEOUT: 'soon' })).rejects.toThrow(/CALL_TIMEOUT must be a duration/);
  });

  it('the summaries are named after the scripts', async () => {
    for (const [script, name] of [
      [REST, 'infer-rest'],
      [GRPC, 'infer-grpc'],
    ]) {
      const { options, definitions } = await loadScript(script);
      const out = await callHandleSummary(script, {}, summaryData(options, { samples: [], definitions }));
      expect(Object.keys(out).sort()).toEqual([`${name}-summary.json`, 'stdout']);
      expect(out.stdout).toMatch(new RegExp(`^\\n${name}: 0 iterations; 2 of \\d+ thresholds FAILED`));
    }
  });
});
