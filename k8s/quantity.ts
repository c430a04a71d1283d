/**
 * Kubernetes resource quantities ("500m", "2", "1.5Gi", "64M", "1e3") as numbers.
 */

const SUFFIX: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

const PATTERN = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?(?:\d+(?:\.\d*)?|\.\d+))|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$/;

/**
 * Parses a quantity to a plain number (bytes for memory, cores for CPU).
 * @throws Error when the text is not a quantity
 */
export function parseQuantity(value: string | number): number {
  if (typeof value === 'number') return value;
  const m = PATTERN.exec(value.trim());
  if (!m) throw new Error(`'${value}' is not a Kubernetes quantity`);
  const [, num, exponent, suffix] = m;
  if (exponent) return Number(num + exponent);
  return Number(num) * SUFFIX[suffix ?? ''];
}

/** Rounds bytes up to whole MiB, as a quantity (`49Mi`), for recording measurements. */
export function ceilMi(bytes: number): string {
  return `${Math.max(1, Math.ceil(bytes / SUFFIX.Mi))}Mi`;
}
