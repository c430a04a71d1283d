/**
 * The ceiling for mlp-bench: onnxruntime-node alone, in this process, 2 intra-op threads,
 * one batch in flight (scripts/models/bench-mlp.ts measureThroughput, as the model build
 * records it). bench/path.ts runs it as a process of its own while the stack is stopped,
 * so nothing else of ours shares the cores. Prints one JSON line.
 *
 *   node bench/ceiling.ts [seconds per batch size] [batch sizes, comma-separated]
 */
import { join } from 'node:path';
import { measureThroughput } from '../scripts/models/bench-mlp.ts';
import { ROOT } from './processes.ts';

const seconds = Number(process.argv[2] ?? 2);
const batches = (process.argv[3] ?? '32,128').split(',').map(Number);
const report = await measureThroughput(join(ROOT, 'models', 'mlp-bench', '1', 'model.onnx'), batches, seconds, 20240518);
console.log(
  JSON.stringify({
    intraOpNumThreads: report.intraOpNumThreads,
    results: report.results.map((r) => ({ batch: r.batchSize, rowsPerSec: r.rowsPerSecond, p50Ms: r.p50LatencyMs })),
  }),
);
