// Shared pieces of the k6 scripts. Plain JavaScript ES module: runs on every k6 from v0.48.
import encoding from 'k6/encoding';
import http from 'k6/http';

export const BASE_URL = __ENV.BASE_URL || 'http://localhost:4000';
export const GRAPHQL_URL = `${BASE_URL.replace(/\/$/, '')}/graphql`;
export const WS_URL = GRAPHQL_URL.replace(/^http/, 'ws');
export const MODEL = __ENV.MODEL || 'mlp-bench';
export const ROW_WIDTH = Number(__ENV.ROW_WIDTH || 512);
/** The latency objective, in ms, stated as thresholds below. */
export const SLO_MS = Number(__ENV.SLO_MS || 100);

/** The closed-loop scenario both scripts use: ramp to 32 virtual users, hold at 64, wind down. */
export const CLOSED_LOOP_RAMP = {
  executor: 'ramping-vus',
  startVUs: 1,
  stages: [
    { duration: '20s', target: 32 },
    { duration: '40s', target: 64 },
    { duration: '10s', target: 0 },
  ],
};

/** How rows travel: `json` (a list of numbers) or `base64` (one FP32 tensor's bytes: a quarter of the size, less for the server to parse). */
export const ENCODING = __ENV.ENCODING || 'json';
/** The model's input tensor name, for ENCODING=base64. */
export const INPUT_NAME = __ENV.INPUT_NAME || 'input';

/** One input row of `ROW_WIDTH` values; for text models, set TEXT instead. */
export function input() {
  if (__ENV.TEXT) return { text: __ENV.TEXT };
  const row = new Float32Array(ROW_WIDTH);
  for (let i = 0; i < ROW_WIDTH; i++) row[i] = Math.random();
  if (ENCODING === 'base64') {
    return { tensors: [{ name: INPUT_NAME, shape: [1, ROW_WIDTH], datatype: 'FP32', base64: encoding.b64encode(row.buffer, 'std') }] };
  }
  return { features: Array.from(row) };
}

/** POSTs a GraphQL operation; GraphQL errors may arrive with any status, so callers check `errors`. */
export function gql(query, variables, tags) {
  return http.post(GRAPHQL_URL, JSON.stringify({ query, variables }), {
    headers: { 'content-type': 'application/json', ...(__ENV.API_KEY ? { 'x-api-key': __ENV.API_KEY } : {}) },
    tags,
  });
}

/** A handleSummary that writes JSON (SUMMARY_FILE, default summary.json) and a short text report. */
export function summary(name) {
  return (data) => {
    const file = __ENV.SUMMARY_FILE || `${name}-summary.json`;
    const m = data.metrics;
    const line = (k) => (m[k] ? `${k}: p50=${(m[k].values['med'] ?? 0).toFixed(1)} p95=${(m[k].values['p(95)'] ?? 0).toFixed(1)} p99=${(m[k].values['p(99)'] ?? 0).toFixed(1)} ms\n` : '');
    return {
      [file]: JSON.stringify(data, null, 2),
      stdout: `\n${name}: ${m.iterations ? m.iterations.values.count : 0} iterations\n${line('http_req_duration')}${line('prediction_latency')}`,
    };
  };
}
