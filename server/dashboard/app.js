// @ts-check
/**
 * The operations view. It subscribes to `serverStats` (over SSE, one payload a second) and
 * redraws from each payload: the figures are the whole deployment's, whichever API replica
 * answers. With auth on it asks for an API key and keeps it for the browser tab only.
 */
import { h } from './dom.js';
import { errorCode, subscribe } from './graphql.js';
import { barChart, lineChart } from './charts.js';
import { tryItForm } from './try-it.js';

const KEY_STORAGE = 'batchline.apiKey';
const HISTORY_MINUTES = 5;

const LIVE = `subscription OperationsView {
  serverStats(windowSeconds: 10, historyMinutes: ${HISTORY_MINUTES}) {
    at windowSeconds graphiql
    viewer { name admin authEnabled }
    processes { id role pool host pid startedAt executionProvider executionProviderNote }
    queues { pool waiting active delayed failed maxDepth }
    rejections { code status count }
    models {
      name acceptsText
      versions {
        version status error ready pool task workers executionProviders labels
        residency { pinned loadedOn residentBytes }
        inputs { name datatype shape } outputs { name datatype shape }
        batching { edge { maxRows maxDelayMs } worker { policy maxBatchSize maxDelayMs sloMs limit } }
      }
      requestsPerSecond errorsPerSecond
      latency { phase count p50Ms p99Ms meanMs }
      batchSizes { rows count } batchesPerSecond meanBatchRows batchReasons { label count }
      cacheHitRatio
      rejections { code status count }
      drift { status pValue samples checkedAt }
      rollout {
        source revision stable pinnedStable
        canary { version percent comparePercent } shadow { version percent }
        gates { minRequests maxErrorRateIncrease minAgreement driftAlpha }
        capture { percent }
        lastRollback { version at by gate reason }
        comparisons {
          kind stable candidate mirrored compared failed shed agreement maxAbsDiff maxRelDiff
          stableSide { requests errorRate p99Ms } candidateSide { requests errorRate p99Ms } latencyDeltaP99Ms
        }
      }
      history { at requestsPerSecond p50Ms p99Ms queueP50Ms inferenceP50Ms meanBatchRows }
    }
  }
}`;

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const state = {
  key: sessionStorage.getItem(KEY_STORAGE) ?? undefined,
  /** @type {Map<string, { card: HTMLElement, live: HTMLElement, head: HTMLElement, versions: HTMLElement, rollout: HTMLElement }>} */
  cards: new Map(),
};

const num = (v, digits = 1) => (v == null ? '–' : Number(v).toFixed(digits));
const msNum = (v) => (v == null ? '–' : num(v, v < 10 ? 2 : 1));
/** p50 / p99 in one figure, the unit once. */
const quantiles = (l) => (l?.p50Ms == null ? '–' : `${msNum(l.p50Ms)} / ${msNum(l.p99Ms)} ms`);
/** p-values near 0 matter in their exponent. */
const pValue = (p) => (p >= 0.001 ? p.toFixed(3) : p.toExponential(1));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function setStatus(text, cls = '') {
  const el = $('status');
  el.textContent = text;
  el.className = `status ${cls}`;
}

/** A figure: a big number with its name; `data-figure` lets tests and people find it. */
function figure(name, label, value, detail = '') {
  return h('div', { class: 'figure', 'data-figure': name }, [
    h('div', { class: 'figure-value' }, [value]),
    h('div', { class: 'figure-label' }, [label, detail ? h('span', { class: 'muted' }, [` ${detail}`]) : null]),
  ]);
}

function table(headers, rows, attrs = {}) {
  return h('table', attrs, [
    h('thead', {}, [
      h(
        'tr',
        {},
        headers.map((x) => h('th', {}, [x])),
      ),
    ]),
    h(
      'tbody',
      {},
      rows.map((r) =>
        h(
          'tr',
          {},
          r.map((c) => h('td', {}, [c])),
        ),
      ),
    ),
  ]);
}

const shape = (t) => `${t.name} ${t.datatype}[${t.shape.map((d) => (d < 0 ? '?' : d)).join('×')}]`;

function renderHeader(stats) {
  const v = stats.viewer;
  const who = v.authEnabled ? `key ${v.name}${v.admin ? ' (admin)' : ''}` : 'auth off';
  const forget = h('button', { type: 'button', class: 'link', 'data-testid': 'forget-key' }, ['forget key']);
  forget.addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORAGE);
    location.reload();
  });
  $('viewer').replaceChildren(
    h('span', { 'data-testid': 'viewer' }, [who]),
    v.authEnabled ? forget : '',
    stats.graphiql ? h('a', { href: '/graphql' }, ['GraphiQL']) : '',
    h('a', { href: '/metrics' }, ['/metrics']),
  );
}

function renderDeployment(stats) {
  const total = stats.models.reduce((a, m) => a + m.requestsPerSecond, 0);
  const tiles = [figure('deployment-rps', 'requests/s', num(total, 1), `last ${stats.windowSeconds} s`)];
  if (stats.processes) {
    const apis = stats.processes.filter((p) => p.role === 'api').length;
    const workers = stats.processes.filter((p) => p.role === 'worker');
    tiles.push(figure('api-replicas', 'API replicas', String(apis)));
    tiles.push(figure('workers', 'workers', String(workers.length), workers.map((w) => w.pool).join(', ')));
  }
  if (stats.rejections) {
    for (const status of [429, 503, 504]) {
      const n = stats.rejections.filter((r) => r.status === status).reduce((a, r) => a + r.count, 0);
      tiles.push(
        figure(
          `rejected-${status}`,
          `${status} refused`,
          String(n),
          stats.rejections
            .filter((r) => r.status === status)
            .map((r) => r.code)
            .join(' '),
        ),
      );
    }
  }
  $('deployment').replaceChildren(...tiles);
  const queues = stats.queues.map((q) => {
    const share = Math.min(1, q.waiting / Math.max(1, q.maxDepth));
    const bar = h('div', { class: 'backlog', title: `${q.waiting} of ${q.maxDepth}` }, [
      h('span', { style: `width:${(share * 100).toFixed(1)}%`, class: share > 0.8 ? 'hot' : '' }),
    ]);
    return [
      q.pool,
      String(q.waiting),
      String(q.active),
      String(q.delayed),
      String(q.failed),
      h('div', { class: 'backlog-cell' }, [bar, h('span', { class: 'muted' }, [`${q.waiting} / ${q.maxDepth}`])]),
    ];
  });
  $('queues').replaceChildren(
    table(['pool', 'waiting', 'active', 'delayed', 'failed', 'backlog / queue.maxDepth'], queues, { 'data-testid': 'queues' }),
  );
  if (stats.processes) {
    const since = (t) => new Date(t).toLocaleTimeString();
    $('processes').replaceChildren(
      h('h2', {}, ['Processes']),
      table(
        ['role', 'pool', 'execution provider', 'host', 'pid', 'since'],
        stats.processes.map((p) => [
          p.role,
          p.pool ?? '',
          // The provider, and on hover why the ones before it in the chain were skipped.
          p.executionProvider ? h('span', { title: p.executionProviderNote ?? '', 'data-testid': 'provider' }, [p.executionProvider]) : '',
          p.host,
          String(p.pid),
          since(p.startedAt),
        ]),
        { 'data-testid': 'processes' },
      ),
    );
  } else {
    $('processes').replaceChildren();
  }
}

function modelCard(model) {
  const head = h('div', { class: 'card-head' });
  const versions = h('div', { class: 'versions' });
  const rollout = h('div', { class: 'rollout', 'data-testid': 'rollout' });
  const live = h('div', { class: 'live' });
  const card = h('section', { class: 'card', 'data-testid': 'model', 'data-model': model.name }, [
    head,
    versions,
    rollout,
    live,
    h('h3', {}, ['Try it']),
    tryItForm(model, () => state.key),
  ]);
  return { card, head, versions, live, rollout };
}

const pct = (v) => (v == null ? '–' : `${num(v * 100, 1)} %`);
const pair = (a, b) => (a == null || b == null ? '–' : `${a} / ${b}`);

/**
 * The traffic policy (stable, canary, shadow, capture), each version pair's figures since it
 * began, and the last rollback with its reason. Empty for a model with none of these.
 */
function renderRollout(el, r) {
  const quiet = !r || (!r.canary && !r.shadow && !r.lastRollback && !r.pinnedStable && !(r.capture.percent > 0));
  if (quiet) return void el.replaceChildren();
  const chips = [
    h('span', { class: 'chip', 'data-testid': 'rollout-stable' }, [`stable ${r.stable ?? '–'}${r.pinnedStable ? '' : ' (newest)'}`]),
    r.canary
      ? h('span', { class: 'chip', 'data-testid': 'rollout-canary' }, [`canary ${r.canary.version} · ${num(r.canary.percent, 1)} %`])
      : '',
    r.shadow
      ? h('span', { class: 'chip', 'data-testid': 'rollout-shadow' }, [`shadow ${r.shadow.version} · ${num(r.shadow.percent, 1)} %`])
      : '',
    r.capture.percent > 0 ? h('span', { class: 'chip', 'data-testid': 'rollout-capture' }, [`capture ${num(r.capture.percent, 1)} %`]) : '',
    r.gates ? h('span', { class: 'chip' }, [`gates from ${r.gates.minRequests} requests`]) : '',
    h('span', { class: 'muted' }, [`${r.source} policy, revision ${r.revision}`]),
  ];
  const rows = r.comparisons.map((c) => [
    `${c.kind} ${c.stable} → ${c.candidate}`,
    pair(c.stableSide.requests, c.candidateSide.requests),
    pair(pct(c.stableSide.errorRate), pct(c.candidateSide.errorRate)),
    `${pair(msNum(c.stableSide.p99Ms), msNum(c.candidateSide.p99Ms))}${c.latencyDeltaP99Ms == null ? '' : ` (Δ ${msNum(c.latencyDeltaP99Ms)})`}`,
    pct(c.agreement),
    c.maxAbsDiff == null ? '–' : `${c.maxAbsDiff.toPrecision(3)} / ${pct(c.maxRelDiff)}`,
    `${c.mirrored}: ${c.compared} compared, ${c.failed} failed, ${c.shed} shed`,
  ]);
  const rollback = r.lastRollback
    ? h('p', { class: 'error', 'data-testid': 'rollout-rollback' }, [
        `rolled back ${r.lastRollback.version} at ${new Date(r.lastRollback.at).toLocaleTimeString()} by ${r.lastRollback.by}`,
        r.lastRollback.gate ? ` (${r.lastRollback.gate})` : '',
        `: ${r.lastRollback.reason}`,
      ])
    : '';
  el.replaceChildren(
    h('h3', {}, ['Rollout']),
    h('div', { class: 'chips' }, chips),
    rows.length
      ? table(['pair', 'requests', 'error rate', 'p99 ms', 'agreement', 'max diff abs / rel', 'mirrored'], rows, {
          'data-testid': 'rollout-comparisons',
        })
      : '',
    rollback,
  );
}

/**
 * What the API's edge batcher does for a version (core/batching/plan.ts).
 * @param {{ maxRows: number, maxDelayMs: number } | undefined} e
 */
function edgeBatching(e) {
  if (!e) return '–';
  return e.maxRows <= 1 ? 'one job per request' : `≤ ${e.maxRows} rows, ${e.maxDelayMs} ms wait`;
}

/**
 * What a worker's batcher does for a version, with the limit a worker reports now.
 * @param {{ policy: string, maxBatchSize: number, maxDelayMs: number, sloMs: number, limit: number | null } | undefined} w
 */
function workerBatching(w) {
  if (!w) return '–';
  if (w.maxBatchSize <= 1) return 'each job alone';
  const live = w.limit == null ? '' : `, live limit ${w.limit}`;
  return `${w.policy}, ≤ ${w.maxBatchSize} rows${live}, ${w.maxDelayMs} ms wait, SLO ${w.sloMs} ms`;
}

/** Which workers hold a version in memory (docs/RESIDENCY.md): how many of those serving it, its measured size, pinned. */
function residency(v) {
  const r = v.residency;
  if (!r) return '–';
  const size = r.residentBytes == null ? '' : `, ${(r.residentBytes / 2 ** 20).toFixed(1)} MiB`;
  return `${r.loadedOn.length} of ${v.workers}${size}${r.pinned ? ', pinned' : ''}`;
}

function renderModel(entry, m, windowSeconds) {
  const newest = m.versions.at(-1);
  const failed = m.versions.some((v) => v.status === 'FAILED');
  const workers = Math.max(0, ...m.versions.map((v) => v.workers));
  entry.head.replaceChildren(
    h('h2', {}, [m.name]),
    h('span', { class: `badge ${failed ? 'bad' : newest?.ready ? 'good' : 'warn'}`, 'data-testid': 'model-status' }, [
      failed ? 'FAILED' : newest?.ready ? 'ready' : 'no worker',
    ]),
    h('span', { class: 'badge' }, [`pool ${newest?.pool ?? '?'}`]),
    h('span', { class: 'badge', 'data-testid': 'model-workers' }, [`${workers} worker${workers === 1 ? '' : 's'}`]),
  );
  renderRollout(entry.rollout, m.rollout);
  entry.versions.replaceChildren(
    table(
      ['version', 'status', 'workers', 'in memory', 'runs on', 'edge batch', 'worker batch', 'inputs', 'outputs'],
      m.versions.map((v) => [
        v.version,
        v.error ? h('span', { class: 'error', title: v.error }, [`${v.status}: ${v.error}`]) : v.status,
        String(v.workers),
        h('span', { 'data-testid': 'in-memory', title: v.residency?.loadedOn.join(', ') ?? '' }, [residency(v)]),
        h('span', { 'data-testid': 'runs-on' }, [v.executionProviders.join(', ') || '–']),
        h('span', { 'data-testid': 'edge-batching' }, [edgeBatching(v.batching?.edge)]),
        h('span', { 'data-testid': 'worker-batching' }, [workerBatching(v.batching?.worker)]),
        v.inputs.map(shape).join(', ') + (m.acceptsText ? ' (from text)' : ''),
        v.outputs.map(shape).join(', ') +
          (v.labels ? ` → ${v.labels.length > 4 ? `${v.labels.length} labels` : v.labels.join(' / ')}` : ''),
      ]),
    ),
  );
  const phase = (p) => m.latency.find((l) => l.phase === p);
  const total = phase('total');
  const queue = phase('queue');
  const inference = phase('inference');
  const rejected = m.rejections.reduce((a, r) => a + r.count, 0);
  const figures = h('div', { class: 'figures' }, [
    figure('rps', 'requests/s', num(m.requestsPerSecond, 1), `last ${windowSeconds} s`),
    figure('errors', 'errors/s', num(m.errorsPerSecond, 1)),
    figure('latency-total', 'total p50 / p99', quantiles(total)),
    figure('latency-queue', 'queue p50 / p99', quantiles(queue)),
    figure('latency-inference', 'inference p50 / p99', quantiles(inference)),
    figure('batches', 'batches/s', num(m.batchesPerSecond, 1), m.meanBatchRows == null ? '' : `mean ${num(m.meanBatchRows, 1)} rows`),
    figure('cache', 'cache hits', m.cacheHitRatio == null ? '–' : `${num(m.cacheHitRatio * 100, 0)} %`),
    figure(
      'drift',
      'drift p-value',
      m.drift ? pValue(m.drift.pValue) : '–',
      m.drift ? `${m.drift.status.toLowerCase().replace('_', ' ')}, ${m.drift.samples} samples` : 'no report yet',
    ),
    figure('rejections', 'refused', String(rejected), m.rejections.map((r) => `${r.status} ${r.code} ${r.count}`).join(' · ')),
  ]);
  const at = (p) => Date.parse(p.at);
  const to = Date.parse(m.history.at(-1)?.at ?? new Date().toISOString()) + 5000;
  const from = to - HISTORY_MINUTES * 60000;
  const latencyPlot = lineChart({
    from,
    to,
    unit: 'latency, ms',
    series: [
      { name: 'total p99', cls: 's-p99', points: m.history.map((p) => ({ t: at(p), v: p.p99Ms })) },
      { name: 'total p50', cls: 's-p50', points: m.history.map((p) => ({ t: at(p), v: p.p50Ms })) },
      { name: 'queue p50', cls: 's-queue', points: m.history.map((p) => ({ t: at(p), v: p.queueP50Ms })) },
      { name: 'inference p50', cls: 's-inference', points: m.history.map((p) => ({ t: at(p), v: p.inferenceP50Ms })) },
    ],
  });
  const ratePlot = lineChart({
    from,
    to,
    unit: 'requests/s',
    series: [{ name: 'requests/s', cls: 's-rate', points: m.history.map((p) => ({ t: at(p), v: p.requestsPerSecond })) }],
  });
  // Bars up to the first bound that holds the model's largest batch; above it only if something landed there.
  const limit = Math.max(...m.versions.map((v) => Math.max(v.batching?.edge.maxRows ?? 1, v.batching?.worker.maxBatchSize ?? 1)));
  const upTo = m.batchSizes.findIndex((b) => b.rows === null || b.rows >= limit);
  const buckets = m.batchSizes.filter((b, i) => i <= upTo || b.count > 0);
  const batchPlot = barChart({
    unit: `batches by rows, last ${windowSeconds} s`,
    bars: buckets.map((b, i) => ({ label: b.rows === null ? `>${buckets[i - 1]?.rows ?? ''}` : `≤${b.rows}`, value: b.count })),
  });
  const reasons = m.batchReasons.length
    ? m.batchReasons.map((r) => h('span', { class: 'chip' }, [`${r.label} ${r.count}`]))
    : [h('span', { class: 'muted' }, ['no batches'])];
  entry.live.replaceChildren(
    figures,
    h('div', { class: 'plots' }, [
      h('figure', {}, [
        latencyPlot,
        h('figcaption', {}, [
          h('span', { class: 'key s-p50' }, ['total p50']),
          h('span', { class: 'key s-p99' }, ['total p99']),
          h('span', { class: 'key s-queue' }, ['queue p50']),
          h('span', { class: 'key s-inference' }, ['inference p50']),
        ]),
      ]),
      h('figure', {}, [ratePlot, h('figcaption', {}, [`requests/s, ${HISTORY_MINUTES} min in 5 s steps`])]),
      h('figure', {}, [batchPlot, h('figcaption', { 'data-testid': 'close-reasons' }, ['closed: ', ...reasons])]),
    ]),
  );
}

function render(stats) {
  $('login').hidden = true;
  $('main').hidden = false;
  renderHeader(stats);
  renderDeployment(stats);
  const names = new Set(stats.models.map((m) => m.name));
  for (const [name, entry] of state.cards) {
    if (!names.has(name)) {
      entry.card.remove();
      state.cards.delete(name);
    }
  }
  for (const m of stats.models) {
    let entry = state.cards.get(m.name);
    if (!entry) {
      entry = modelCard(m);
      state.cards.set(m.name, entry);
      $('models').append(entry.card);
    }
    renderModel(entry, m, stats.windowSeconds);
  }
  if (stats.models.length === 0) $('models').replaceChildren(h('p', { class: 'muted' }, ['No model this key may use.']));
  setStatus(`live · ${new Date(stats.at).toLocaleTimeString()}`, 'ok');
  $('status').dataset.at = stats.at;
}

/** Shows the key form; resolves with the key typed in. */
function askForKey(message) {
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-message').textContent = message ?? 'This server asks for an API key.';
  const form = /** @type {HTMLFormElement} */ ($('login-form'));
  const input = /** @type {HTMLInputElement} */ ($('login-key'));
  input.focus();
  return new Promise((resolve) => {
    form.onsubmit = (ev) => {
      ev.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORAGE, key);
      input.value = '';
      resolve(key);
    };
  });
}

async function main() {
  for (;;) {
    const stop = new AbortController();
    let unauthenticated = false;
    try {
      await subscribe(
        LIVE,
        {},
        state.key,
        (r) => {
          if (errorCode(r) === 'UNAUTHENTICATED') {
            unauthenticated = true;
            stop.abort();
          } else if (r.errors?.length) {
            setStatus(`${errorCode(r) ?? 'error'}: ${r.errors[0].message}`, 'bad');
          } else {
            render(r.data.serverStats);
          }
        },
        stop.signal,
      );
      if (!unauthenticated) setStatus('the stream ended; reconnecting…', 'warn');
    } catch {
      if (!unauthenticated) setStatus('connection lost; reconnecting…', 'bad');
    }
    if (unauthenticated) {
      const hadKey = state.key !== undefined;
      state.key = undefined;
      sessionStorage.removeItem(KEY_STORAGE);
      state.key = await askForKey(hadKey ? 'That key is not known here; try another.' : undefined);
      continue;
    }
    await sleep(1000);
  }
}

void main();
