// Asynchronous work over WebSocket (graphql-transport-ws): submitPrediction, then
// predictionResult on the same socket; measures submit-to-result latency.
//   K6_NO_USAGE_REPORT=true k6 run -e BASE_URL=http://localhost:4000 -e API_KEY=... loadtests/submit-subscribe-ws.js
import ws from 'k6/ws';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  API_KEY,
  closedLoop,
  envDuration,
  envNumber,
  errorCode,
  input,
  isAuthFailure,
  MAX_CACHED_RATE,
  MODEL,
  SLO_MS,
  summary,
  TREND_STATS,
  WS_URL,
} from './lib.js';

const latency = new Trend('prediction_latency', true);
const completed = new Counter('predictions_completed');
const failures = new Counter('prediction_failures');
const authRejected = new Counter('auth_rejected');
const cached = new Rate('prediction_cached');

const PER_CONNECTION = Math.round(envNumber('PER_CONNECTION', 20, 1));
/** A connection still waiting for results after this long is closed and its predictions count as failed. */
const SOCKET_TIMEOUT_MS = envDuration('SOCKET_TIMEOUT', 30000);
/** After a connection that failed or dropped, wait this long before the next, not reconnect at once. */
const RECONNECT_BACKOFF_MS = envDuration('RECONNECT_BACKOFF', 1000);

/** The server's answers to a refused key: 4401 no or unknown key, 4403 a key without the scope. */
const AUTH_CLOSE_CODES = [4401, 4403];
/** Closes we asked for (k6 closes with 1001 by default), or a server that said goodbye cleanly. */
const CLEAN_CLOSE_CODES = [1000, 1001];

export const options = {
  scenarios: { subscribers: closedLoop(0) },
  thresholds: {
    prediction_latency: ['p(99)<' + SLO_MS],
    // Without it, a run where every connection was refused passes: no latency samples, no failures.
    predictions_completed: ['count>0'],
    prediction_failures: ['count<1'],
    auth_rejected: ['count<1'],
    prediction_cached: ['rate<' + MAX_CACHED_RATE],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: TREND_STATS,
};

const SUBMIT = 'mutation($m: String!, $i: PredictionInput!) { submitPrediction(model: $m, input: $i) { id status } }';
const RESULT = 'subscription($id: ID!) { predictionResult(id: $id) { id status result { cached } error { code message } } }';

/** One connection: PER_CONNECTION predictions one after another. Says how it ended. */
function session() {
  const outcome = { refused: '', closeCode: 0, completed: 0 };
  let n = 0;
  let started = 0;
  let waiting = false;
  const res = ws.connect(WS_URL, { headers: { 'Sec-WebSocket-Protocol': 'graphql-transport-ws' } }, function (socket) {
    const fail = function (reason) {
      if (waiting) failures.add(1, { reason: reason });
      waiting = false;
    };
    const refuse = function (why) {
      outcome.refused = why;
      fail(why);
      socket.close();
    };
    const submitNext = function () {
      n++;
      started = Date.now();
      waiting = true;
      socket.send(JSON.stringify({ id: 's' + n, type: 'subscribe', payload: { query: SUBMIT, variables: { m: MODEL, i: input() } } }));
    };
    socket.on('open', function () {
      // batchline reads the key from connection_init's payload (or from the upgrade's headers).
      socket.send(JSON.stringify({ type: 'connection_init', payload: API_KEY ? { apiKey: API_KEY } : {} }));
    });
    socket.on('message', function (raw) {
      const msg = JSON.parse(raw);
      if (msg.type === 'connection_ack') return submitNext();
      if (msg.type === 'ping') return socket.send(JSON.stringify({ type: 'pong' }));
      if (msg.type === 'error' || (msg.type === 'next' && msg.payload.errors)) {
        const code = errorCode(msg.type === 'error' ? msg.payload : msg.payload.errors) || 'GRAPHQL_ERROR';
        if (isAuthFailure(code)) return refuse(code);
        fail(code);
        return socket.close();
      }
      if (msg.type !== 'next') return;
      const data = msg.payload.data || {};
      if (data.submitPrediction) {
        socket.send(
          JSON.stringify({ id: 'r' + n, type: 'subscribe', payload: { query: RESULT, variables: { id: data.submitPrediction.id } } })
        );
        return;
      }
      const event = data.predictionResult;
      if (!event) return;
      waiting = false;
      if (event.status === 'COMPLETED') {
        latency.add(Date.now() - started);
        completed.add(1);
        outcome.completed++;
        cached.add(event.result && event.result.cached ? 1 : 0);
      } else {
        failures.add(1, { reason: (event.error && event.error.code) || event.status });
      }
      if (n < PER_CONNECTION) submitNext();
      else socket.close();
    });
    socket.on('close', function (code) {
      outcome.closeCode = code;
      if (AUTH_CLOSE_CODES.indexOf(code) >= 0) outcome.refused = 'close ' + code;
      fail('closed ' + code);
    });
    socket.setTimeout(function () {
      fail('timeout');
      socket.close();
    }, SOCKET_TIMEOUT_MS);
  });
  check(res, {
    'websocket upgraded': function (r) {
      return !!r && r.status === 101;
    },
  });
  return outcome;
}

export default function () {
  let outcome;
  try {
    outcome = session();
  } catch (err) {
    // Refused connection or failed upgrade (k6 throws): back off instead of redialling at once.
    check(err, {
      'websocket upgraded': function () {
        return false;
      },
    });
    sleep(RECONNECT_BACKOFF_MS / 1000);
    return;
  }
  check(outcome, {
    'API key accepted': function (o) {
      return !o.refused;
    },
  });
  if (outcome.refused) {
    authRejected.add(1, { reason: outcome.refused });
    // Every VU holds the same key: reconnecting would only repeat the refusal as fast as it can.
    exec.test.abort('the API refused the key (' + outcome.refused + '): set API_KEY to a key with predict scope for ' + MODEL);
    return;
  }
  if (CLEAN_CLOSE_CODES.indexOf(outcome.closeCode) < 0) sleep(RECONNECT_BACKOFF_MS / 1000);
}

export const handleSummary = summary('submit-subscribe-ws');
