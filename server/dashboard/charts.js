// @ts-check
/** Small hand-written SVG plots: lines over time, and bars. No library: a few dozen points each. */

const SVG = 'http://www.w3.org/2000/svg';

/**
 * @param {string} tag
 * @param {Record<string, string | number>} attrs
 * @param {(Element | string)[]} children
 */
function s(tag, attrs = {}, children = []) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

/** A round upper bound for an axis: 1, 2 or 5 times a power of ten. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v) ?? 10 * p;
}

/** A tick label: a few significant digits, no trailing zeros after the point. */
const fmt = (v) => String(Number(v.toPrecision(3)));

/**
 * Lines over time. A null value breaks its line (no data in that step).
 * @param {{ from: number, to: number, unit: string, series: { name: string, cls: string, points: { t: number, v: number | null }[] }[] }} o
 */
export function lineChart(o) {
  const W = 360;
  const H = 150;
  const L = 40;
  const R = 8;
  const T = 10;
  const B = 22;
  const values = o.series.flatMap((x) => x.points.map((p) => p.v)).filter((v) => v !== null);
  const max = niceMax(Math.max(0, ...values));
  const x = (t) => L + ((t - o.from) / Math.max(1, o.to - o.from)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  for (const f of [0, 0.5, 1]) {
    svg.append(s('line', { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), class: 'grid' }));
    svg.append(s('text', { x: L - 4, y: y(max * f) + 3, class: 'tick', 'text-anchor': 'end' }, [fmt(max * f)]));
  }
  const minutes = Math.round((o.to - o.from) / 60000);
  svg.append(s('text', { x: L, y: H - 6, class: 'tick' }, [`-${minutes} min`]));
  svg.append(s('text', { x: W - R, y: H - 6, class: 'tick', 'text-anchor': 'end' }, ['now']));
  svg.append(s('text', { x: (L + W - R) / 2, y: H - 6, class: 'tick', 'text-anchor': 'middle' }, [o.unit]));
  for (const series of o.series) {
    let d = '';
    let pen = 'M';
    for (const p of series.points) {
      if (p.v === null) {
        pen = 'M';
        continue;
      }
      d += `${pen}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
      pen = 'L';
    }
    if (d) svg.append(s('path', { d, class: `line ${series.cls}` }, [s('title', {}, [series.name])]));
    // A point between two gaps has no segment to draw: mark it.
    series.points.forEach((p, i) => {
      if (p.v !== null && series.points[i - 1]?.v == null && series.points[i + 1]?.v == null)
        svg.append(s('circle', { cx: x(p.t), cy: y(p.v), r: 2.5, class: `dot ${series.cls}` }));
    });
  }
  return svg;
}

/**
 * Bars with labels under them.
 * @param {{ unit: string, bars: { label: string, value: number }[] }} o
 */
export function barChart(o) {
  const W = 360;
  const H = 150;
  const L = 40;
  const R = 8;
  const T = 10;
  const B = 34;
  const max = niceMax(Math.max(0, ...o.bars.map((b) => b.value)));
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  for (const f of [0, 0.5, 1]) {
    svg.append(s('line', { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), class: 'grid' }));
    svg.append(s('text', { x: L - 4, y: y(max * f) + 3, class: 'tick', 'text-anchor': 'end' }, [fmt(max * f)]));
  }
  const slot = (W - L - R) / Math.max(1, o.bars.length);
  o.bars.forEach((b, i) => {
    const h = y(0) - y(b.value);
    const bx = L + i * slot + slot * 0.15;
    svg.append(
      s('rect', { x: bx, y: y(b.value), width: slot * 0.7, height: Math.max(0, h), class: 'bar' }, [
        s('title', {}, [`${b.label}: ${fmt(b.value)}`]),
      ]),
    );
    svg.append(s('text', { x: bx + slot * 0.35, y: H - B + 13, class: 'tick', 'text-anchor': 'middle' }, [b.label]));
  });
  svg.append(s('text', { x: (L + W - R) / 2, y: H - 4, class: 'tick', 'text-anchor': 'middle' }, [o.unit]));
  return svg;
}
