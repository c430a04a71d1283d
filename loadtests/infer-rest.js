// The Open Inference Protocol over REST: POST /v2/models/MODEL/infer, one FP32 row of
// ROW_WIDTH values a request, as binary tensor data (ENCODING=binary, the default: the JSON
// header, then the row's bytes; the output asked for as binary too) or as JSON numbers
// (ENCODING=json). Scenarios and thresholds as predict-http.js; a miss exits 99.
//   K6_NO_USAGE_REPORT=true k6 run -e BASE_URL=http://localhost:4000 loadtests/infer-rest.js
import { check } from 'k6';
import exec from 'k6/execution';
import http from 'k6/http';
import { Counter } from 'k6/metrics';
import { API_KEY, binaryBody, INPUT_NAME, MODEL, requestPlan, ROW_WIDTH, rowBytes, summary, V2_URL } from './lib.js';

const inferErrors = new Counter('infer_errors');
const completed = new Counter('predictions_completed');

/** `binary` (the binary tensor data extension) or `json`. */
const REST_ENCODING = __ENV.ENCODING || 'binary';
if (REST_ENCODING !== 'binary' && REST_ENCODING !== 'json') throw new Error('ENCODING must be binary or json, got "' + REST_ENCODING + '"');
/** The output to ask for; every output when empty. */
const OUTPUT_NAME = __ENV.OUTPUT_NAME || '';
const AUTH_HEADER = (__ENV.AUTH_HEADER || 'x-api-key').toLowerCase();
const URL = V2_URL + '/models/' + encodeURIComponent(MODEL) + '/infer';

export const options = requestPlan('http_req_duration', {
  http_req_failed: ['rate<0.01'],
  infer_errors: ['count<1'],
  checks: ['rate>0.99'],
});

function headers(extra) {
  const h = extra;
  if (API_KEY) h[AUTH_HEADER] = API_KEY;
  return h;
}

/** The JSON answer, or `{ error }` when it is not JSON. */
function parse(res) {
  try {
    return /** @type {any} */ (res.json()) || {};
  } catch (err) {
    return { error: 'response is not JSON: ' + err };
  }
}

/** One request: the response and whether it carried outputs. */
function send() {
  const tensor = { name: INPUT_NAME, shape: [1, ROW_WIDTH], datatype: 'FP32' };
  const outputs = OUTPUT_NAME ? [{ name: OUTPUT_NAME, parameters: { binary_data: REST_ENCODING === 'binary' } }] : undefined;
  if (REST_ENCODING === 'json') {
    const row = new Float32Array(rowBytes());
    tensor.data = Array.from(row);
    const body = { inputs: [tensor] };
    if (outputs) body.outputs = outputs;
    const res = http.post(URL, JSON.stringify(body), { headers: headers({ 'content-type': 'application/json' }), tags: { name: 'infer' } });
    const parsed = parse(res);
    const ok = res.status === 200 && !!parsed.outputs && parsed.outputs.length > 0 && parsed.outputs[0].data.length > 0;
    return { res: res, ok: ok };
  }
  tensor.parameters = { binary_data_size: ROW_WIDTH * 4 };
  const header = { inputs: [tensor] };
  if (outputs) header.outputs = outputs;
  else header.parameters = { binary_data_output: true };
  const b = binaryBody(header, rowBytes());
  const res = http.post(URL, b.body, {
    headers: headers({ 'content-type': 'application/octet-stream', 'inference-header-content-length': String(b.headerLength) }),
    responseType: 'binary',
    tags: { name: 'infer' },
  });
  const length = Number(res.headers['Inference-Header-Content-Length'] || res.headers['inference-header-content-length'] || 0);
  const size = res.body && res.body.byteLength !== undefined ? res.body.byteLength : 0;
  return { res: res, ok: res.status === 200 && length > 0 && size > length };
}

export default function () {
  const sent = send();
  const res = sent.res;
  if (sent.ok) completed.add(1);
  else inferErrors.add(1, { status: String(res.status) });
  check(res, {
    'status 200': function (r) {
      return r.status === 200;
    },
    'has outputs': function () {
      return sent.ok;
    },
  });
  if (res.status === 401 || res.status === 403) {
    exec.test.abort('the API refused the key (HTTP ' + res.status + '): set API_KEY to a key with predict scope for ' + MODEL);
  }
}

export const handleSummary = summary('infer-rest');
