/**
 * The `mlp-bench` model: a 512 -> 2048 ReLU -> 2048 ReLU -> 10 MLP with seeded random
 * (He-initialised) weights. Its outputs mean nothing; it exists to put realistic load on
 * the batching and worker pools. Also measures its in-process throughput.
 */
import os from 'node:os';
import { InferenceSession, Tensor, env } from 'onnxruntime-node';
import type { DenseLayer } from './onnx-writer.ts';
import { gaussian, mulberry32 } from './prng.ts';

export const MLP_BENCH_SIZES = [512, 2048, 2048, 10] as const;

export function buildBenchLayers(seed: number): DenseLayer[] {
  const normal = gaussian(mulberry32(seed));
  const layers: DenseLayer[] = [];
  for (let l = 0; l + 1 < MLP_BENCH_SIZES.length; l++) {
    const inFeatures = MLP_BENCH_SIZES[l];
    const outFeatures = MLP_BENCH_SIZES[l + 1];
    const last = l + 2 === MLP_BENCH_SIZES.length;
    // He init for the ReLU layers, LeCun for the linear output layer.
    const std = Math.sqrt((last ? 1 : 2) / inFeatures);
    const weight = new Float32Array(inFeatures * outFeatures);
    for (let i = 0; i < weight.length; i++) weight[i] = normal() * std;
    const bias = new Float32Array(outFeatures);
    for (let i = 0; i < bias.length; i++) bias[i] = normal() * 0.01;
    layers.push({ inFeatures, outFeatures, weight, bias, activation: last ? 'none' : 'relu' });
  }
  return layers;
}

export function parameterCount(layers: DenseLayer[]): number {
  return layers.reduce((sum, l) => sum + l.weight.length + l.bias.length, 0);
}

export interface ThroughputResult {
  batchSize: number;
  runs: number;
  seconds: number;
  rowsPerSecond: number;
  meanLatencyMs: number;
  p50LatencyMs: number;
  p95LatencyMs: number;
}

export interface ThroughputReport {
  intraOpNumThreads: number;
  interOpNumThreads: number;
  executionProvider: 'cpu';
  onnxruntimeVersion: string;
  node: string;
  cpu: string;
  logicalCpus: number;
  note: string;
  results: ThroughputResult[];
}

/** Rows per second at each batch size, single-threaded caller, `seconds` per size. */
export async function measureThroughput(path: string, batchSizes: number[], seconds: number, seed: number): Promise<ThroughputReport> {
  const intraOpNumThreads = 2;
  const interOpNumThreads = 1;
  const session = await InferenceSession.create(path, { intraOpNumThreads, interOpNumThreads, executionProviders: ['cpu'] });
  const uniform = mulberry32(seed);
  const width = MLP_BENCH_SIZES[0];
  const results: ThroughputResult[] = [];
  try {
    for (const batchSize of batchSizes) {
      const data = new Float32Array(batchSize * width);
      for (let i = 0; i < data.length; i++) data[i] = uniform() * 2 - 1;
      const feeds = { input: new Tensor('float32', data, [batchSize, width]) };
      for (let i = 0; i < 10; i++) await session.run(feeds);
      const latencies: number[] = [];
      const start = performance.now();
      while (performance.now() - start < seconds * 1000) {
        const t0 = performance.now();
        await session.run(feeds);
        latencies.push(performance.now() - t0);
      }
      const elapsed = (performance.now() - start) / 1000;
      latencies.sort((a, b) => a - b);
      const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
      results.push({
        batchSize,
        runs: latencies.length,
        seconds: round(elapsed, 3),
        rowsPerSecond: round((latencies.length * batchSize) / elapsed, 1),
        meanLatencyMs: round(latencies.reduce((a, b) => a + b, 0) / latencies.length, 3),
        p50LatencyMs: round(at(0.5), 3),
        p95LatencyMs: round(at(0.95), 3),
      });
    }
  } finally {
    await session.release();
  }
  return {
    intraOpNumThreads,
    interOpNumThreads,
    executionProvider: 'cpu',
    onnxruntimeVersion: env.versions.node ?? env.versions.common,
    node: process.version,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    logicalCpus: os.availableParallelism(),
    note: 'In-process onnxruntime-node CPU run, one request in flight, on the machine that ran scripts/build-models.ts; indicative only.',
    results,
  };
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
