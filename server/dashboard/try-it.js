// @ts-check
/**
 * The "try it" form of one model, built from its declared inputs: a text box for models
 * that take text (they preprocess it themselves), a box of numbers per tensor otherwise.
 */
import { h } from './dom.js';
import { request } from './graphql.js';

const PREDICT = `query TryIt($model: String!, $input: PredictionInput!) {
  predict(model: $model, input: $input) {
    version label score probabilities { label probability } predictions { label score }
    outputs { name shape datatype data } timings { queueMs batchWaitMs coldStartMs inferenceMs totalMs } cached batchRows
  }
}`;

/** Values from a JSON array (nested or flat) or from numbers separated by commas or spaces. */
export function parseNumbers(text) {
  const t = text.trim();
  if (!t) return [];
  const values = t.startsWith('[')
    ? JSON.parse(t).flat(Infinity)
    : t
        .split(/[\s,]+/)
        .filter(Boolean)
        .map(Number);
  const bad = values.findIndex((v) => typeof v !== 'number' || !Number.isFinite(v));
  if (bad >= 0) throw new Error(`value ${bad + 1} is not a number`);
  return values;
}

/** One row's shape for a declared tensor: the batch dimension dropped, one dynamic dimension inferred from the count. */
function rowShape(spec, count) {
  const dims = spec.shape.slice(1);
  const known = dims.filter((d) => d > 0).reduce((a, b) => a * b, 1);
  const dynamic = dims.filter((d) => d < 0).length;
  if (dynamic > 1) throw new Error(`${spec.name}: more than one dynamic dimension; send it from GraphiQL`);
  if (dynamic === 1) return dims.map((d) => (d < 0 ? count / known : d));
  if (count % known !== 0) throw new Error(`${spec.name}: expected a multiple of ${known} values, got ${count}`);
  return dims;
}

function tensorInput(spec, values) {
  const dims = rowShape(spec, values.length);
  const perRow = dims.reduce((a, b) => a * b, 1);
  return { name: spec.name, datatype: spec.datatype, shape: [values.length / perRow, ...dims], data: values };
}

const fixed = (v, d = 1) => (v == null ? '–' : Number(v).toFixed(d));

function answerView(p) {
  const rows = [];
  if (p.label != null)
    rows.push(
      h('div', { class: 'answer-label', 'data-testid': 'try-label' }, [
        p.label,
        h('span', { class: 'muted' }, [` ${fixed(p.score * 100, 1)} %`]),
      ]),
    );
  for (const c of p.probabilities ?? []) {
    rows.push(
      h('div', { class: 'prob' }, [
        h('span', { class: 'prob-label' }, [c.label]),
        h('span', { class: 'prob-bar' }, [h('span', { style: `width:${(c.probability * 100).toFixed(1)}%` })]),
        h('span', { class: 'prob-value' }, [fixed(c.probability, 4)]),
      ]),
    );
  }
  if (p.label == null) {
    for (const o of p.outputs)
      rows.push(
        h('pre', { class: 'tensor' }, [
          `${o.name} [${o.shape.join('×')}] ${o.datatype}: ${o.data
            .slice(0, 16)
            .map((v) => fixed(v, 4))
            .join(', ')}${o.data.length > 16 ? ', …' : ''}`,
        ]),
      );
  }
  const t = p.timings;
  rows.push(
    h('div', { class: 'timings', 'data-testid': 'try-timings' }, [
      `queue ${fixed(t.queueMs, 2)} ms · batch wait ${fixed(t.batchWaitMs ?? 0, 2)} ms${t.coldStartMs ? ` · cold start ${fixed(t.coldStartMs, 2)} ms` : ''} · inference ${fixed(t.inferenceMs, 2)} ms · total ${fixed(t.totalMs, 2)} ms`,
      h('span', { class: 'muted' }, [` · version ${p.version} · batch of ${p.batchRows}${p.cached ? ' · from the cache' : ''}`]),
    ]),
  );
  return rows;
}

/**
 * @param {{ name: string, acceptsText: boolean, versions: { inputs: { name: string, datatype: string, shape: number[] }[] }[] }} model
 * @param {() => string | undefined} apiKey
 */
export function tryItForm(model, apiKey) {
  const inputs = model.versions.at(-1)?.inputs ?? [];
  const out = h('div', { class: 'answer', 'data-testid': 'try-answer' });
  /** @type {{ spec: any, box: HTMLTextAreaElement }[]} */
  const boxes = [];
  const fields = [];
  let textBox;
  if (model.acceptsText) {
    textBox = /** @type {HTMLInputElement} */ (
      h('input', { type: 'text', value: 'Maria', 'aria-label': 'text', 'data-testid': 'try-text' })
    );
    fields.push(h('label', {}, ['text ', textBox]));
  } else {
    for (const spec of inputs) {
      const box = /** @type {HTMLTextAreaElement} */ (
        h('textarea', {
          rows: 2,
          placeholder: `${spec.name}: ${spec.datatype} [${spec.shape.join(', ')}]: numbers, or a JSON array`,
          'data-testid': `try-tensor-${spec.name}`,
        })
      );
      const perRow = spec.shape.slice(1).reduce((a, b) => a * Math.max(1, b), 1);
      const fill = () => {
        box.value = Array.from({ length: perRow }, () => (Math.random() * 2 - 1).toFixed(3)).join(', ');
      };
      const random = h('button', { type: 'button', class: 'link' }, ['random row']);
      random.addEventListener('click', fill);
      // A row to start from, when one is small enough to read.
      if (perRow <= 4096) fill();
      boxes.push({ spec, box });
      fields.push(
        h('div', { class: 'tensor-field' }, [
          h('div', {}, [
            h('b', {}, [spec.name]),
            h('span', { class: 'muted' }, [` ${spec.datatype} [${spec.shape.join(', ')}] · `]),
            random,
          ]),
          box,
        ]),
      );
    }
  }
  const submit = h('button', { type: 'submit' }, ['Predict']);
  const form = h('form', { class: 'try-it', 'data-testid': 'try-it' }, [...fields, submit, out]);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let input;
    try {
      input = textBox ? { text: textBox.value } : { tensors: boxes.map(({ spec, box }) => tensorInput(spec, parseNumbers(box.value))) };
    } catch (e) {
      out.replaceChildren(h('div', { class: 'error' }, [/** @type {Error} */ (e).message]));
      return;
    }
    submit.setAttribute('disabled', '');
    out.replaceChildren(h('div', { class: 'muted' }, ['asking…']));
    try {
      const r = await request(PREDICT, { model: model.name, input }, apiKey());
      if (r.errors?.length)
        out.replaceChildren(
          h('div', { class: 'error', 'data-testid': 'try-error' }, [`${r.errors[0].extensions?.code ?? 'ERROR'}: ${r.errors[0].message}`]),
        );
      else out.replaceChildren(...answerView(r.data.predict));
    } catch (e) {
      out.replaceChildren(h('div', { class: 'error' }, [String(e)]));
    } finally {
      submit.removeAttribute('disabled');
    }
  });
  return form;
}
