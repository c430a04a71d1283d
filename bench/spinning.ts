/**
 * onnxruntime's intra-op thread spinning (`session.intra_op.allow_spinning`), measured:
 * `npm run bench:spinning`. mlp-bench in this process with 2 intra-op threads, spinning off
 * and on, batch 1 and 32, 3 interleaved rounds of 2 s; prints the medians of rows/s and of
 * CPU ms per row (this process, the pool's threads included). On cores shared with the API
 * and Redis, CPU per row is what a worker takes from them; the workers keep spinning off
 * (core/runtime/inference-thread.ts) unless this shows it paying.
 */
import { join } from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { ROOT } from './processes.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const ROUNDS = 3;
const BATCHES = [1, 32];
const WIDTH = 512;
const path = join(ROOT, 'models', 'mlp-bench', '1', 'model.onnx');

const sessions = new Map<string, InferenceSession>();
for (const spinning of ['0', '1'])
  sessions.set(
    spinning,
    await InferenceSession.create(path, {
      intraOpNumThreads: 2,
      interOpNumThreads: 1,
      executionProviders: ['cpu'],
      extra: { session: { intra_op: { allow_spinning: spinning } } },
    }),
  );

interface Sample {
  rowsPerSec: number;
  cpuMsPerRow: number;
}
const samples = new Map<string, Sample[]>();
for (let round = 0; round < ROUNDS; round++) {
  for (const batch of BATCHES) {
    const data = Float32Array.from({ length: batch * WIDTH }, (_, i) => Math.sin(i));
    const feeds = { input: new Tensor('float32', data, [batch, WIDTH]) };
    for (const [spinning, session] of sessions) {
      for (let i = 0; i < 10; i++) await session.run(feeds);
      const cpu = process.cpuUsage();
      const started = performance.now();
      let runs = 0;
      while (performance.now() - started < SECONDS * 1000) {
        await session.run(feeds);
        runs++;
      }
      const ms = performance.now() - started;
      const used = process.cpuUsage(cpu);
      const key = `${spinning}:${batch}`;
      samples.set(key, [
        ...(samples.get(key) ?? []),
        { rowsPerSec: (runs * batch * 1000) / ms, cpuMsPerRow: (used.user + used.system) / 1000 / (runs * batch) },
      ]);
    }
  }
}
for (const s of sessions.values()) await s.release();

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fig = (spinning: string, batch: number, k: keyof Sample): number => median(samples.get(`${spinning}:${batch}`)!.map((s) => s[k]));
console.log(`mlp-bench, 2 intra-op threads, medians of ${ROUNDS} interleaved rounds of ${SECONDS} s`);
console.log('| batch | spinning | rows/s | CPU ms/row |');
console.log('|---|---|---|---|');
for (const batch of BATCHES)
  for (const spinning of ['0', '1'])
    console.log(
      `| ${batch} | ${spinning === '1' ? 'on' : 'off'} | ${fig(spinning, batch, 'rowsPerSec').toFixed(0)} | ${fig(spinning, batch, 'cpuMsPerRow').toFixed(3)} |`,
    );
for (const batch of BATCHES)
  console.log(
    `batch ${batch}, on/off: rows/s ${(fig('1', batch, 'rowsPerSec') / fig('0', batch, 'rowsPerSec')).toFixed(2)}, CPU per row ${(fig('1', batch, 'cpuMsPerRow') / fig('0', batch, 'cpuMsPerRow')).toFixed(2)}`,
  );
