// Shared pieces of the k6 scripts. ES2017 on purpose, so they run on every k6 from v0.48:
// before v0.53, k6 compiles scripts with Babel 6, which stops at object spread, `??`, `?.`
// and `catch {}` (exit 107). `npm run lint` parses loadtests/ as ES2017 to hold the line.
import encoding from 'k6/encoding';
import http from 'k6/http';
import { FIRST_NAMES } from './first-names.js';

/** A number from the environment; a value that is not one stops the run at init, naming the variable. */
export function envNumber(name, fallback, min) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!isFinite(n) || n < (min === undefined ? 0 : min)) {
    throw new Error(name + ' must be a number of at least ' + (min === undefined ? 0 : min) + ', got "' + raw + '"');
  }
  return n;
}

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
const UNIT_MS = { ms: 1, s: 1000, m: 60000, h: 3600000 };

/** A duration from the environment in ms: k6's form (`90s`, `1m30s`, `500ms`) or plain seconds. */
export function envDuration(name, fallbackMs) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallbackMs;
  if (/^\d+(\.\d+)?$/.test(raw)) return Number(raw) * 1000;
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(raw)) {
    throw new Error(name + ' must be a duration such as 30s, 2m or 1m30s, got "' + raw + '"');
  }
  let ms = 0;
  let part;
  DURATION_PART.lastIndex = 0;
  while ((part = DURATION_PART.exec(raw)) !== null) ms += Number(part[1]) * UNIT_MS[part[2]];
  return ms;
}

/** A duration in ms as k6 reads it. */
export function k6Duration(ms) {
  return ms % 1000 === 0 ? ms / 1000 + 's' : Math.round(ms) + 'ms';
}

export const BASE_URL = __ENV.BASE_URL || 'http://localhost:4000';
export const GRAPHQL_URL = BASE_URL.replace(/\/$/, '') + '/graphql';
export const WS_URL = GRAPHQL_URL.replace(/^http/, 'ws');
export const MODEL = __ENV.MODEL || 'mlp-bench';
export const ROW_WIDTH = envNumber('ROW_WIDTH', 512, 1);
/** The latency objective, in ms, stated as thresholds by each script. */
export const SLO_MS = envNumber('SLO_MS', 100);
/** Above this share of answers from the API's cache, the run measured the cache, not the model. */
export const MAX_CACHED_RATE = envNumber('MAX_CACHED_RATE', 0.05);
export const API_KEY = __ENV.API_KEY || '';
const AUTH_HEADER = (__ENV.AUTH_HEADER || 'x-api-key').toLowerCase();

/**
 * How long the load lasts. DURATION is each scenario's measured phase (the closed loop's hold at
 * VUS, the open loop's constant rate); RAMP and WARMUP default to a sixth of it (1-10 s), so
 * `-e DURATION=12s` alone is a short run with every scenario and threshold in place.
 * (`k6 run --duration` or `--vus` would replace the scenarios, and thresholds tagged with a
 * scenario would then pass on zero samples: use these variables instead.)
 */
const DURATION_MS = envDuration('DURATION', 60000);
const EDGE_MS = Math.min(10000, Math.max(1000, Math.round(DURATION_MS / 6000) * 1000));
export const RUN = {
  durationMs: DURATION_MS,
  rampMs: envDuration('RAMP', EDGE_MS),
  warmupMs: envDuration('WARMUP', EDGE_MS),
  vus: Math.round(envNumber('VUS', 64, 1)),
  // k6 reads rates and VU counts as integers; 40.5 would stop it with a JSON error.
  rate: Math.round(envNumber('RATE', 500, 1)),
  preAllocatedVUs: Math.round(envNumber('PRE_ALLOCATED_VUS', 100, 1)),
  maxVUs: Math.round(envNumber('MAX_VUS', 1000, 1)),
};
/** Iterations still running when a scenario ends get this long before the next one starts. */
const GRACE_MS = 5000;

/** The closed loop: ramp from 1 to VUS virtual users over RAMP, hold for DURATION, ramp down over RAMP. */
export function closedLoop(startMs) {
  return {
    executor: 'ramping-vus',
    startVUs: 1,
    startTime: k6Duration(startMs),
    stages: [
      { duration: k6Duration(RUN.rampMs), target: RUN.vus },
      { duration: k6Duration(RUN.durationMs), target: RUN.vus },
      { duration: k6Duration(RUN.rampMs), target: 0 },
    ],
    gracefulRampDown: k6Duration(GRACE_MS),
    gracefulStop: k6Duration(GRACE_MS),
  };
}

/** When the next scenario may start after a closed loop started at `startMs`. */
export function closedLoopEnd(startMs) {
  return startMs + 2 * RUN.rampMs + RUN.durationMs + GRACE_MS;
}

/** Open loop: RATE arrivals a second for `durationMs`, however slowly the server answers. */
export function openLoop(startMs, durationMs) {
  return {
    executor: 'constant-arrival-rate',
    rate: RUN.rate,
    timeUnit: '1s',
    duration: k6Duration(durationMs),
    preAllocatedVUs: Math.min(RUN.preAllocatedVUs, RUN.maxVUs),
    maxVUs: RUN.maxVUs,
    startTime: k6Duration(startMs),
    gracefulStop: k6Duration(GRACE_MS),
  };
}

/** Trend statistics in the summary: p(99) is not among k6's defaults. */
export const TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];

/**
 * The k6 `options` of a request-answer script: the scenarios `SCENARIOS` lists (closed and/or
 * open; anything else stops the script), and their thresholds besides the script's own
 * (`thresholds`): `durationMetric` (http_req_duration, grpc_req_duration) p95 under twice the SLO
 * in the closed loop and p99 under the SLO in the open one, and at least one answer counted in
 * `predictions_completed` for each, so a scenario that never ran fails instead of passing on
 * zero samples. The open loop's warm-up (`RUN.warmupMs`) has no threshold: the batcher and the
 * workers settle at the target rate before the measured phase.
 */
export function requestPlan(durationMetric, thresholds) {
  const selected = (__ENV.SCENARIOS || 'closed,open').split(',').map(function (s) {
    return s.trim();
  });
  selected.forEach(function (s) {
    if (s !== 'closed' && s !== 'open') throw new Error('SCENARIOS lists closed and/or open, got "' + s + '"');
  });
  const scenarios = {};
  let at = 0;
  if (selected.indexOf('closed') >= 0) {
    scenarios.closed = closedLoop(at);
    at = closedLoopEnd(at);
    thresholds[durationMetric + '{scenario:closed}'] = ['p(95)<' + SLO_MS * 2];
    thresholds['predictions_completed{scenario:closed}'] = ['count>0'];
  }
  if (selected.indexOf('open') >= 0) {
    if (RUN.warmupMs > 0) {
      scenarios.open_warmup = openLoop(at, RUN.warmupMs);
      at += RUN.warmupMs;
    }
    scenarios.open = openLoop(at, RUN.durationMs);
    thresholds[durationMetric + '{scenario:open}'] = ['p(99)<' + SLO_MS];
    thresholds['predictions_completed{scenario:open}'] = ['count>0'];
  }
  return { scenarios: scenarios, thresholds: thresholds, summaryTrendStats: TREND_STATS };
}

/** How rows travel: `json` (a list of numbers) or `base64` (one FP32 tensor's bytes: a quarter of the size, less for the server to parse). */
export const ENCODING = __ENV.ENCODING || 'json';
/** The model's input tensor name, for ENCODING=base64. */
export const INPUT_NAME = __ENV.INPUT_NAME || 'input';
/**
 * What each request sends: `features` (a random row of ROW_WIDTH values), `names` (two first
 * names drawn from 1,197: over a million pairs, so the API's cache rarely answers) or `text`
 * (TEXT every time: that measures the cache). Setting TEXT alone means `text`.
 */
export const INPUT = __ENV.INPUT || (__ENV.TEXT ? 'text' : 'features');
if (['features', 'names', 'text'].indexOf(INPUT) < 0) throw new Error('INPUT must be features, names or text, got "' + INPUT + '"');
if (INPUT === 'text' && !__ENV.TEXT) throw new Error('INPUT=text needs TEXT');

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

/** One input for `predict` or `submitPrediction`. */
export function input() {
  if (INPUT === 'text') return { text: __ENV.TEXT };
  if (INPUT === 'names') return { text: pick(FIRST_NAMES) + ' ' + pick(FIRST_NAMES) };
  const row = new Float32Array(ROW_WIDTH);
  for (let i = 0; i < ROW_WIDTH; i++) row[i] = Math.random();
  if (ENCODING === 'base64') {
    return { tensors: [{ name: INPUT_NAME, shape: [1, ROW_WIDTH], datatype: 'FP32', base64: encoding.b64encode(row.buffer, 'std') }] };
  }
  return { features: Array.from(row) };
}

/** POSTs a GraphQL operation; GraphQL errors may arrive with any status, so callers check `errors`. */
export function gql(query, variables, tags) {
  const headers = { 'content-type': 'application/json' };
  if (API_KEY) headers[AUTH_HEADER] = API_KEY;
  return http.post(GRAPHQL_URL, JSON.stringify({ query: query, variables: variables }), { headers: headers, tags: tags });
}

/** The first error's `extensions.code`, or '' without one. */
export function errorCode(errors) {
  const first = errors && errors[0];
  return (first && first.extensions && first.extensions.code) || '';
}

/** Codes that mean the API key was refused: nothing this run measures would be real. */
export function isAuthFailure(code) {
  return code === 'UNAUTHENTICATED' || code === 'FORBIDDEN';
}

function fixed(v) {
  return typeof v === 'number' ? v.toFixed(v >= 100 ? 0 : 2) : '-';
}

/** The statistic a threshold expression (`p(99)<100`, `count>0`, `rate<0.01`) compares. */
function statisticOf(expression) {
  const m = /^\s*([a-z]+(\(\d+(\.\d+)?\))?)/.exec(expression);
  return m ? m[1] : '';
}

/** The text report: every threshold with pass or fail and the value it judged, then latency percentiles. */
export function report(name, data) {
  const metrics = data.metrics || {};
  const keys = Object.keys(metrics).sort();
  const lines = [];
  let failed = 0;
  let total = 0;
  keys.forEach(function (key) {
    const thresholds = metrics[key].thresholds || {};
    Object.keys(thresholds).forEach(function (expression) {
      const ok = !!(thresholds[expression] && thresholds[expression].ok);
      const statistic = statisticOf(expression);
      total++;
      if (!ok) failed++;
      lines.push(
        '  ' +
          (ok ? 'PASS' : 'FAIL') +
          '  ' +
          key +
          '  ' +
          expression +
          '  (' +
          statistic +
          '=' +
          fixed(metrics[key].values[statistic]) +
          ')'
      );
    });
  });
  const latency = keys.filter(function (key) {
    return metrics[key].type === 'trend' && metrics[key].contains === 'time' && /^(http_req_duration|prediction_latency)/.test(key);
  });
  const iterations = metrics.iterations ? metrics.iterations.values.count : 0;
  let text =
    '\n' +
    name +
    ': ' +
    iterations +
    ' iterations; ' +
    (failed ? failed + ' of ' + total + ' thresholds FAILED' : 'all ' + total + ' thresholds passed') +
    '\n';
  text += lines.join('\n') + '\n';
  if (latency.length) {
    text += '  latency, ms (p50 / p95 / p99):\n';
    latency.forEach(function (key) {
      const v = metrics[key].values;
      text += '    ' + key + ': ' + fixed(v.med) + ' / ' + fixed(v['p(95)']) + ' / ' + fixed(v['p(99)']) + '\n';
    });
  }
  return text;
}

/** A handleSummary that writes k6's JSON (SUMMARY_FILE, default `<name>-summary.json`) and prints the report. */
export function summary(name) {
  return function (data) {
    const out = { stdout: report(name, data) };
    out[__ENV.SUMMARY_FILE || name + '-summary.json'] = JSON.stringify(data, null, 2);
    return out;
  };
}

/** The Open Inference Protocol's REST root (`/v2` on the API's port). */
export const V2_URL = BASE_URL.replace(/\/$/, '') + '/v2';

/** One random FP32 row of ROW_WIDTH values, as the bytes the inference protocol's binary data carries (little-endian). */
export function rowBytes() {
  const row = new Float32Array(ROW_WIDTH);
  for (let i = 0; i < ROW_WIDTH; i++) row[i] = Math.random();
  return row.buffer;
}

/** Text of ASCII characters (a JSON header) as bytes, without TextEncoder (not in every k6). */
export function asciiBytes(text) {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0x7f;
  return out;
}

/** A binary-data body: the JSON header's bytes, then `bytes`. Returns the body and the header's length. */
export function binaryBody(header, bytes) {
  const head = asciiBytes(JSON.stringify(header));
  const body = new Uint8Array(head.length + bytes.byteLength);
  body.set(head, 0);
  body.set(new Uint8Array(bytes), head.length);
  return { body: body.buffer, headerLength: head.length };
}
