// Asynchronous work over WebSocket (graphql-transport-ws): submitPrediction, then
// predictionResult on the same socket; measures submit-to-result latency.
//   K6_NO_USAGE_REPORT=true k6 run -e BASE_URL=http://localhost:4000 loadtests/submit-subscribe-ws.js
import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { CLOSED_LOOP_RAMP, input, MODEL, SLO_MS, summary, WS_URL } from './lib.js';

const latency = new Trend('prediction_latency', true);
const failures = new Counter('prediction_failures');
const PER_CONNECTION = Number(__ENV.PER_CONNECTION || 20);

export const options = {
  scenarios: {
    subscribers: {
      ...CLOSED_LOOP_RAMP,
    },
  },
  thresholds: {
    prediction_latency: [`p(99)<${SLO_MS}`],
    prediction_failures: ['count<1'],
    checks: ['rate>0.99'],
  },
};

const SUBMIT = 'mutation($m: String!, $i: PredictionInput!) { submitPrediction(model: $m, input: $i) { id status } }';
const RESULT = 'subscription($id: ID!) { predictionResult(id: $id) { id status error { code } } }';

export default function () {
  const res = ws.connect(WS_URL, { headers: { 'Sec-WebSocket-Protocol': 'graphql-transport-ws' } }, (socket) => {
    let n = 0;
    let started = 0;
    const submitNext = () => {
      n++;
      started = Date.now();
      socket.send(JSON.stringify({ id: `s${n}`, type: 'subscribe', payload: { query: SUBMIT, variables: { m: MODEL, i: input() } } }));
    };
    socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: {} })));
    socket.on('message', (raw) => {
      const msg = JSON.parse(raw);
      if (msg.type === 'connection_ack') return submitNext();
      if (msg.type === 'ping') return socket.send(JSON.stringify({ type: 'pong' }));
      if (msg.type === 'error') {
        failures.add(1);
        return socket.close();
      }
      if (msg.type !== 'next') return;
      const data = msg.payload.data || {};
      if (data.submitPrediction) {
        socket.send(JSON.stringify({ id: `r${n}`, type: 'subscribe', payload: { query: RESULT, variables: { id: data.submitPrediction.id } } }));
      } else if (data.predictionResult) {
        const ok = data.predictionResult.status === 'COMPLETED';
        check(data.predictionResult, { completed: () => ok });
        if (ok) latency.add(Date.now() - started);
        else failures.add(1);
        if (n < PER_CONNECTION) submitNext();
        else socket.close();
      } else if (msg.payload.errors) {
        failures.add(1);
        socket.close();
      }
    });
    socket.setTimeout(() => socket.close(), 30000);
  });
  check(res, { 'websocket upgraded': (r) => r && r.status === 101 });
}

export const handleSummary = summary('submit-subscribe-ws');
