/** Reading a process's /metrics in a benchmark. */

/**
 * Prometheus text: the sum of `name`'s samples whose labels include `match` and none of
 * `exclude`. A `model` label matches by name, with or without its `@version`. NaN where the
 * process does not export the metric at all (renamed, or no /metrics), so a missing figure
 * reads '-', not 0.
 */
export function metricSum(text: string, name: string, match: Record<string, string>, exclude: Record<string, string> = {}): number {
  if (!new RegExp(`^# TYPE ${name.replace(/_(sum|count|bucket)$/, '')} `, 'm').test(text)) return NaN;
  const is = (labels: Record<string, string>, k: string, v: string): boolean =>
    labels[k] === v || (k === 'model' && labels[k]?.startsWith(`${v}@`) === true);
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))) {
    const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(match).every(([k, v]) => is(labels, k, v)) && !Object.entries(exclude).some(([k, v]) => is(labels, k, v)))
      sum += Number(m[2]);
  }
  return sum;
}

/** A process's /metrics text, or '' when it does not answer. */
export async function scrape(url: string): Promise<string> {
  try {
    return await (await fetch(url)).text();
  } catch {
    return '';
  }
}
