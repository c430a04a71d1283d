// Synchronous `predict` over HTTP: a closed loop of VUS virtual users, then an open loop at
// RATE requests a second after a short warm-up. Thresholds state the SLO; a miss exits 99.
//   K6_NO_USAGE_REPORT=true k6 run -e BASE_URL=http://localhost:4000 loadtests/predict-http.js
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate } from 'k6/metrics';
import { errorCode, gql, input, isAuthFailure, MAX_CACHED_RATE, MODEL, requestPlan, summary } from './lib.js';

const graphqlErrors = new Counter('graphql_errors');
const completed = new Counter('predictions_completed');
const cached = new Rate('prediction_cached');

/** Which scenarios run, in this order: `closed`, `open` (the open loop brings its warm-up). */
export const options = requestPlan('http_req_duration', {
  http_req_failed: ['rate<0.01'],
  graphql_errors: ['count<1'],
  prediction_cached: ['rate<' + MAX_CACHED_RATE],
});

const QUERY =
  'query($m: String!, $i: PredictionInput!) { predict(model: $m, input: $i) { label score cached timings { queueMs inferenceMs totalMs } } }';

function parse(res) {
  try {
    return res.json() || {};
  } catch (err) {
    return { errors: [{ message: 'response is not JSON: ' + err, extensions: { code: 'NOT_JSON' } }] };
  }
}

export default function () {
  const res = gql(QUERY, { m: MODEL, i: input() }, { name: 'predict' });
  const body = parse(res);
  const code = body.errors ? errorCode(body.errors) : '';
  if (body.errors) graphqlErrors.add(1, { code: code });
  const prediction = body.data && body.data.predict;
  if (prediction) {
    completed.add(1);
    cached.add(prediction.cached ? 1 : 0);
  }
  check(res, {
    'status 200': function (r) {
      return r.status === 200;
    },
    'has a prediction': function () {
      return !!prediction;
    },
  });
  if (isAuthFailure(code)) {
    exec.test.abort('the API refused the key (' + code + '): set API_KEY to a key with predict scope for ' + MODEL);
  }
}

export const handleSummary = summary('predict-http');
