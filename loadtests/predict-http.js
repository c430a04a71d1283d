// Synchronous `predict` over HTTP: a closed-loop ramp of virtual users, then an open-loop
// constant arrival rate. Thresholds state the SLO; a miss exits 99.
//   K6_NO_USAGE_REPORT=true k6 run -e BASE_URL=http://localhost:4000 loadtests/predict-http.js
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { CLOSED_LOOP_RAMP, gql, input, MODEL, SLO_MS, summary } from './lib.js';

const graphqlErrors = new Counter('graphql_errors');
const RATE = Number(__ENV.RATE || 500);

export const options = {
  scenarios: {
    closed: {
      ...CLOSED_LOOP_RAMP,
      tags: { scenario: 'closed' },
    },
    open: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: '60s',
      preAllocatedVUs: 100,
      maxVUs: 1000,
      startTime: '75s',
      tags: { scenario: 'open' },
    },
  },
  thresholds: {
    [`http_req_duration{scenario:open}`]: [`p(99)<${SLO_MS}`],
    [`http_req_duration{scenario:closed}`]: [`p(95)<${SLO_MS * 2}`],
    http_req_failed: ['rate<0.01'],
    graphql_errors: ['count<1'],
  },
};

const QUERY = 'query($m: String!, $i: PredictionInput!) { predict(model: $m, input: $i) { label score cached timings { queueMs inferenceMs totalMs } } }';

export default function () {
  const res = gql(QUERY, { m: MODEL, i: input() }, { name: 'predict' });
  let body = {};
  try {
    body = res.json();
  } catch {
    body = {};
  }
  if (body.errors) graphqlErrors.add(1, { code: String(body.errors[0] && body.errors[0].extensions && body.errors[0].extensions.code) });
  check(res, {
    'status 200': (r) => r.status === 200,
    'has a prediction': () => !!(body.data && body.data.predict),
  });
}

export const handleSummary = summary('predict-http');
