/** A small SVG line chart (no dependencies): throughput and p99 latency against offered load. */

export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2'];

function panel(series: Series[], title: string, xLabel: string, yLabel: string, ox: number, hline?: { y: number; label: string }): string {
  const W = 460;
  const H = 300;
  const pad = { l: 60, r: 10, t: 30, b: 40 };
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const ys = series.flatMap((s) => s.points.map((p) => p.y)).concat(hline ? [hline.y] : []);
  const xMax = Math.max(1, ...xs) * 1.05;
  const yMax = Math.max(1, ...ys) * 1.1;
  const X = (x: number) => ox + pad.l + (x / xMax) * (W - pad.l - pad.r);
  const Y = (y: number) => pad.t + (1 - y / yMax) * (H - pad.t - pad.b);
  const out: string[] = [];
  out.push(`<text x="${ox + W / 2}" y="18" text-anchor="middle" font-size="14">${title}</text>`);
  out.push(
    `<line x1="${X(0)}" y1="${Y(0)}" x2="${X(xMax)}" y2="${Y(0)}" stroke="#333"/><line x1="${X(0)}" y1="${Y(0)}" x2="${X(0)}" y2="${Y(yMax)}" stroke="#333"/>`,
  );
  for (let i = 0; i <= 4; i++) {
    const xv = (xMax / 4) * i;
    const yv = (yMax / 4) * i;
    out.push(`<text x="${X(xv)}" y="${Y(0) + 15}" text-anchor="middle" font-size="10">${Math.round(xv)}</text>`);
    out.push(
      `<text x="${X(0) - 5}" y="${Y(yv) + 3}" text-anchor="end" font-size="10">${yv >= 100 ? Math.round(yv) : yv.toFixed(1)}</text>`,
    );
  }
  out.push(`<text x="${ox + W / 2}" y="${H - 5}" text-anchor="middle" font-size="11">${xLabel}</text>`);
  out.push(
    `<text x="${ox + 12}" y="${H / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 ${ox + 12} ${H / 2})">${yLabel}</text>`,
  );
  if (hline)
    out.push(
      `<line x1="${X(0)}" y1="${Y(hline.y)}" x2="${X(xMax)}" y2="${Y(hline.y)}" stroke="#999" stroke-dasharray="4 3"/><text x="${X(xMax) - 4}" y="${Y(hline.y) - 4}" text-anchor="end" font-size="10" fill="#666">${hline.label}</text>`,
    );
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = s.points.map((p) => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(' ');
    out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts}"/>`);
    for (const p of s.points) out.push(`<circle cx="${X(p.x).toFixed(1)}" cy="${Y(p.y).toFixed(1)}" r="2.5" fill="${c}"/>`);
  });
  return out.join('\n');
}

export function renderChart(throughput: Series[], p99: Series[], sloMs: number, subtitle: string): string {
  const legend = throughput
    .map(
      (s, i) =>
        `<rect x="${20 + i * 150}" y="312" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/><text x="${34 + i * 150}" y="321" font-size="11">${s.name}</text>`,
    )
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="940" height="350" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
${panel(throughput, 'Throughput (rows/s) vs offered load', 'offered load (rows/s)', 'rows/s', 0)}
${panel(p99, 'p99 latency (ms) vs offered load', 'offered load (rows/s)', 'p99 ms', 470, { y: sloMs, label: `SLO ${sloMs} ms` })}
${legend}
<text x="930" y="345" text-anchor="end" font-size="9" fill="#666">${subtitle}</text>
</svg>
`;
}
