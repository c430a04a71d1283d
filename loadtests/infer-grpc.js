// The Open Inference Protocol over gRPC (k6/net/grpc): ModelInfer on GRPC_ADDR, one FP32 row
// of ROW_WIDTH values a request in raw_input_contents, one connection per VU. Scenarios and
// thresholds as predict-http.js; a miss exits 99.
//   K6_NO_USAGE_REPORT=true k6 run -e GRPC_ADDR=localhost:4001 loadtests/infer-grpc.js
import { check } from 'k6';
import encoding from 'k6/encoding';
import exec from 'k6/execution';
import grpc from 'k6/net/grpc';
import { Counter } from 'k6/metrics';
import { API_KEY, envDuration, INPUT_NAME, k6Duration, MODEL, requestPlan, ROW_WIDTH, rowBytes, summary } from './lib.js';

const inferErrors = new Counter('infer_errors');
const completed = new Counter('predictions_completed');

export const GRPC_ADDR = __ENV.GRPC_ADDR || 'localhost:4001';
/** Each call's deadline, sent to the server (which honours it as the request's). */
const CALL_TIMEOUT_MS = envDuration('CALL_TIMEOUT', 10000);
const METHOD = 'inference.GRPCInferenceService/ModelInfer';

const client = new grpc.Client();
// Our own .proto, beside the server that serves it.
client.load(['../server/oip'], 'grpc_predict_v2.proto');

export const options = requestPlan('grpc_req_duration', {
  infer_errors: ['count<1'],
  checks: ['rate>0.99'],
});

let connected = false;

export default function () {
  if (!connected) {
    client.connect(GRPC_ADDR, { plaintext: true, timeout: '10s' });
    connected = true;
  }
  const request = {
    model_name: MODEL,
    inputs: [{ name: INPUT_NAME, datatype: 'FP32', shape: [1, ROW_WIDTH] }],
    raw_input_contents: [encoding.b64encode(rowBytes(), 'std')],
  };
  const params = { timeout: k6Duration(CALL_TIMEOUT_MS), tags: { name: 'ModelInfer' } };
  if (API_KEY) params.metadata = { 'x-api-key': API_KEY };
  const res = client.invoke(METHOD, request, params);
  const message = /** @type {any} */ (res && res.message);
  const raw = message && (message.rawOutputContents || message.raw_output_contents);
  const ok = !!res && res.status === grpc.StatusOK && !!raw && raw.length > 0;
  if (ok) completed.add(1);
  else inferErrors.add(1, { status: String(res ? res.status : 'none') });
  check(res, {
    'status OK': function (r) {
      return !!r && r.status === grpc.StatusOK;
    },
    'has outputs': function () {
      return ok;
    },
  });
  if (res && (res.status === grpc.StatusUnauthenticated || res.status === grpc.StatusPermissionDenied)) {
    exec.test.abort('the API refused the key (gRPC status ' + res.status + '): set API_KEY to a key with predict scope for ' + MODEL);
  }
}

export const handleSummary = summary('infer-grpc');
