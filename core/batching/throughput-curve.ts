/**
 * Rows per ms by batch size, as the batches that ran showed it. On a CPU the curve rises and
 * then falls: past some size a batch's rows no longer fit the caches and each costs more (for
 * mlp-bench on 2 cores, 64 rows ran faster per row than 128). A policy that lets batches grow
 * past that peak under load loses throughput just as it needs it, and the queue then grows
 * the batches further: the knee becomes a cliff. So the adaptive policies cap their batches by
 * its peak ({@link ThroughputCurve.capRows}).
 */

/** Sizes are grouped in buckets of a factor of sqrt(2): 1, 2, 3, 4-5, 6-7, 8-11, 12-15, 16-22, 23-31, 32-45, 46-63, 64-90... */
const PER_OCTAVE = 2;
/** Weight of a new batch in its bucket's figure, once the bucket has 1 / ALPHA batches (a plain mean before). */
const ALPHA = 0.2;
/** Batches a bucket needs before its figure counts. */
const MIN_SAMPLES = 2;
/** A larger bucket stops the climb only when it runs slower per row by more than this share... */
const MARGIN = 0.03;
/** ...and by more than this many standard errors of the two figures: less is run-time jitter. */
const Z = 1.5;

interface Bucket {
  /** Mean rows per ms (exponentially weighted), and the variance of a batch's figure about it. */
  rowsPerMs: number;
  variance: number;
  /** Rows of its batches, weighted as `rowsPerMs`. */
  rows: number;
  samples: number;
}

export class ThroughputCurve {
  private readonly buckets: (Bucket | undefined)[] = [];

  observe(rows: number, ms: number): void {
    if (!(rows >= 1 && ms > 0)) return;
    const k = bucketOf(rows);
    const rate = rows / ms;
    const b = (this.buckets[k] ??= { rowsPerMs: rate, variance: 0, rows, samples: 0 });
    b.samples++;
    const w = Math.max(ALPHA, 1 / b.samples);
    const d = rate - b.rowsPerMs;
    b.rowsPerMs += w * d;
    b.variance = (1 - w) * (b.variance + w * d * d);
    b.rows += w * (rows - b.rows);
  }

  private counted(k: number): Bucket | undefined {
    const b = this.buckets[k];
    return b && b.samples >= MIN_SAMPLES ? b : undefined;
  }

  private fastest(): number {
    let best = -1;
    for (let k = 0; k < this.buckets.length; k++) {
      const b = this.counted(k);
      if (b && (best < 0 || b.rowsPerMs > this.buckets[best]!.rowsPerMs)) best = k;
    }
    return best;
  }

  /** The batch size that has run the most rows per ms; undefined until some size has run often enough. */
  fastestRows(): number | undefined {
    const k = this.fastest();
    return k < 0 ? undefined : Math.round(this.buckets[k]!.rows);
  }

  /**
   * The largest batch worth running, once the curve has shown a peak: going up from the
   * fastest bucket, the top of the last one before the first that ran clearly slower per row.
   * Undefined while no larger size has run clearly slower: the curve may still rise, and
   * batches may grow and find out. Under load batches fill to the cap, so its bucket keeps
   * being measured, and a cost that changes moves the cap.
   */
  capRows(): number | undefined {
    const f = this.fastest();
    if (f < 0) return undefined;
    const best = this.buckets[f]!;
    let last = f;
    for (let k = f + 1; k < this.buckets.length; k++) {
      const b = this.counted(k);
      if (!b) continue;
      if (slower(b, best)) return topOf(last);
      last = k;
    }
    return undefined;
  }
}

/** Standard error of a bucket's figure: a plain mean's, or an exponentially weighted one's (n = (2 - ALPHA) / ALPHA). */
function stderr2(b: Bucket): number {
  const n = Math.min(b.samples, (2 - ALPHA) / ALPHA);
  return b.variance / n;
}

function slower(b: Bucket, than: Bucket): boolean {
  const gap = than.rowsPerMs - b.rowsPerMs;
  return gap > MARGIN * than.rowsPerMs && gap > Z * Math.sqrt(stderr2(b) + stderr2(than));
}

function bucketOf(rows: number): number {
  return Math.floor(Math.log2(rows) * PER_OCTAVE + 1e-9);
}

/** Largest row count in bucket k. */
function topOf(k: number): number {
  return Math.max(1, Math.ceil(2 ** ((k + 1) / PER_OCTAVE) - 1e-9) - 1);
}
