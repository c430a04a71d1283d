/**
 * `npm run simulate -- --profile [--provider cpu|cuda|webgpu] [--out FILE]`: measures mlp-bench's run
 * time by batch size with onnxruntime-node, shaped as the worker runs it on this machine (its
 * inference threads and intra-op threads, every thread kept busy at once, as under load), and
 * saves it as a simulator profile (bench/profiles/). `inferenceMs` is the worker's own figure:
 * session.run alone, in its inference thread, which is what the batching policies observe.
 */
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../core/config/settings.ts';
import type { NormalizedInput } from '../core/prediction/input.ts';
import { ModelRepository } from '../core/models/repository.ts';
import { InferencePool } from '../core/runtime/inference-pool.ts';
import { isGpu, type ProviderName } from '../core/runtime/providers.ts';
import type { Profile, ProfilePoint } from '../core/simulation/service.ts';
import { workerShape } from '../core/worker/shape.ts';

const MODELS = fileURLToPath(new URL('../models', import.meta.url));
const SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256];
/**
 * Rounds, each visiting every batch size for ROUND_MS: a shared machine's speed drifts within
 * a minute, and a size measured in one stretch would carry that stretch's luck. Each size's
 * figure is the median over rounds.
 */
const ROUNDS = Number(process.env.PROFILE_ROUNDS ?? 5);
const ROUND_MS = 400;

export interface ProfileOptions {
  /** Batch sizes measured. @defaultValue 1 to 256 by powers of two */
  sizes?: number[];
  /** @defaultValue PROFILE_ROUNDS or 5 */
  rounds?: number;
  /** @defaultValue 400 */
  roundMs?: number;
  /** Who measured, for the profile's `source`. @defaultValue 'npm run simulate -- --profile' */
  by?: string;
  /** The GPU, as its driver names it, for a GPU provider's profile. */
  gpu?: string;
  /** Where progress lines go. @defaultValue stderr, prefixed [profile] */
  log?: (msg: string) => void;
}

const progress = (msg: string): void => void process.stderr.write(`[profile] ${msg}\n`);

function rowsInput(rows: number): NormalizedInput {
  const data = Float32Array.from({ length: rows * 512 }, (_, i) => Math.sin(i));
  return { kind: 'tensors', tensors: [{ name: 'input', datatype: 'FP32', shape: [rows, 512], data: Array.from(data) }] };
}

export async function measureProfile(provider: ProviderName, options: ProfileOptions = {}): Promise<Profile> {
  const { sizes = SIZES, rounds = ROUNDS, roundMs = ROUND_MS, by = 'npm run simulate -- --profile', gpu, log = progress } = options;
  const repo = await ModelRepository.scan(MODELS);
  const mv = repo.find('mlp-bench');
  if (!mv) throw new Error(`mlp-bench not found under ${MODELS}`);
  const config = loadConfig({});
  // The worker's shape on this provider: one slot on a GPU (its runs serialize), the CPU plan's otherwise.
  const shape = workerShape(config, [mv], Math.max(...sizes), undefined, provider);
  const threads = shape.threads;
  // Warmed up at the measured sizes, as a worker warms a GPU up at the batch sizes it forms.
  const warm = { ...mv.config, batching: { ...mv.config.batching, maxBatchSize: Math.max(...sizes) } };
  const pool = await InferencePool.start({
    models: [{ key: 'mlp-bench@1', path: mv.path, config: warm }],
    threads,
    chain: [provider],
    settings: { intraOpThreads: shape.intraOpThreads, webgpu: config.workers.webgpu },
  });
  const points: (ProfilePoint & { runs: number; sigma: number; roundMeans: number[] })[] = [];
  try {
    if (!pool.loaded.includes('mlp-bench@1')) throw new Error(`mlp-bench did not load: ${JSON.stringify(pool.failed)}`);
    const perSize = new Map<number, { mean: number; sigma: number; runs: number }[]>(sizes.map((r) => [r, []]));
    for (let round = 0; round < rounds; round++) {
      for (const rows of sizes) {
        const input = rowsInput(rows);
        for (let i = 0; i < threads; i++) await pool.run('mlp-bench@1', input);
        const times: number[] = [];
        const t0 = performance.now();
        // Every thread busy at once, as in a loaded worker: they share the cores' caches and memory bandwidth.
        await Promise.all(
          Array.from({ length: threads }, async () => {
            while (performance.now() - t0 < roundMs || times.length < 4) times.push((await pool.run('mlp-bench@1', input)).inferenceMs);
          }),
        );
        const logs = times.map(Math.log);
        const lm = logs.reduce((s, x) => s + x, 0) / logs.length;
        perSize.get(rows)!.push({
          mean: times.reduce((s, x) => s + x, 0) / times.length,
          sigma: Math.sqrt(logs.reduce((s, x) => s + (x - lm) ** 2, 0) / Math.max(1, logs.length - 1)),
          runs: times.length,
        });
      }
      log(`round ${round + 1}/${rounds}: ${sizes.map((r) => `${r}: ${perSize.get(r)!.at(-1)!.mean.toFixed(2)} ms`).join(', ')}`);
    }
    for (const rows of sizes) {
      const rounds = perSize.get(rows)!;
      points.push({
        rows,
        ms: round(median(rounds.map((x) => x.mean))),
        runs: rounds.reduce((s, x) => s + x.runs, 0),
        sigma: round(median(rounds.map((x) => x.sigma))),
        roundMeans: rounds.map((x) => round(x.mean)),
      });
    }
  } finally {
    await pool.close();
  }
  // The median spread, so one disturbed batch size does not set the jitter of all.
  const sigma = median(points.map((p) => p.sigma));
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const device = isGpu(provider) ? `${gpu ?? 'a GPU'}, host ` : '';
  return {
    name: `mlp-bench-${provider}`,
    source:
      `measured by ${by} on ${device}${cpu} (${availableParallelism()} cores), onnxruntime-node ${provider} provider, ` +
      `${threads} inference thread(s) x ${shape.intraOpThreads} intra-op thread(s) all busy at once (the worker's shape here); ms is the median over ${rounds} interleaved rounds of the mean inferenceMs per batch size`,
    points: points.map(({ rows, ms }) => ({ rows, ms })),
    jitterSigma: sigma,
    maxRows: Math.max(...sizes),
    slotsPerReplica: threads,
    measured: {
      at: new Date().toISOString(),
      cpu,
      cores: availableParallelism(),
      node: process.version,
      provider,
      threads,
      intraOpThreads: shape.intraOpThreads,
      gpu: isGpu(provider) ? (gpu ?? null) : null,
      rounds,
      roundMs,
      detail: points,
    },
  };
}

const round = (x: number): number => Math.round(x * 1000) / 1000;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function saveProfile(provider: ProviderName, file: string): Promise<Profile> {
  const profile = await measureProfile(provider);
  writeFileSync(file, JSON.stringify(profile, null, 2) + '\n');
  progress(`wrote ${file}`);
  return profile;
}
