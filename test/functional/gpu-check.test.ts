/**
 * scripts/gpu-check.sh in its CPU-only mode, end to end, as a GPU machine would run it but with
 * CPU in WebGPU's place: every step runs (bench, correctness, profile, serving the gpu pool
 * through a real Redis, API and worker), it writes one JSON report holding every line it
 * printed, and the profile it writes is one the simulator and the capacity planner accept.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { CLI } from '../../harness/stack.ts';
import { loadProfile, ServiceModel } from '../../core/simulation/service.ts';

const SCRIPT = fileURLToPath(new URL('../../scripts/gpu-check.sh', import.meta.url));
const run = promisify(execFile);

interface Report {
  mode: string;
  pass: boolean;
  failures: string[];
  log: string[];
  bench: Record<string, { provider: string; batch: number; rowsPerSec: number; p50Ms: number; p99Ms: number }[]>;
  correctness: { model: string; rows: number; comparison: { pass: boolean } }[];
  serve: {
    batched: { runsOn: string; completedPerSec: number; meanBatchRows: number };
    unbatched: { runsOn: string; meanBatchRows: number };
  };
  profile: { files: string[] };
}

describe('scripts/gpu-check.sh run --cpu-only', () => {
  it(
    'runs every step, reports all it printed in one JSON file, and writes a profile the simulator accepts',
    { timeout: 240_000 },
    async () => {
      const out = mkdtempSync(join(tmpdir(), 'batchline-gpu-check-test-'));
      const { stdout } = await run('bash', [SCRIPT, 'run', '--cpu-only', '--out-dir', out], {
        timeout: 220_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      const files = readdirSync(out).filter((f) => /^gpu-check-cpu-only-.*\.json$/.test(f));
      expect(files).toHaveLength(1);
      const report = JSON.parse(readFileSync(join(out, files[0]), 'utf8')) as Report;
      expect(report.failures).toEqual([]);
      expect(report).toMatchObject({ mode: 'cpu-only', pass: true });
      // Everything printed is in the report, line for line.
      expect(report.log.join('\n').trim()).toBe(stdout.trim());
      expect(stdout).toMatch(/CPU-only mode \(CPU in WebGPU’s place: this says nothing about a GPU\)/);

      for (const model of ['mlp-bench', 'spam-mlp', 'name-gender']) {
        expect(report.bench[model].map((c) => c.batch)).toEqual([1, 8, 32, 128, 512, 1024]);
        for (const c of report.bench[model]) {
          expect(c.provider).toBe('cpu');
          expect(c.rowsPerSec).toBeGreaterThan(0);
          expect(c.p99Ms).toBeGreaterThanOrEqual(c.p50Ms);
        }
        expect(report.correctness.filter((c) => c.model === model).map((c) => c.rows)).toEqual([1, 37, 256]);
      }
      expect(report.correctness.every((c) => c.comparison.pass)).toBe(true);

      // The gpu pool served the load on the provider under test, with batching and then without.
      expect(report.serve.batched).toMatchObject({ runsOn: 'cpu' });
      expect(report.serve.batched.completedPerSec).toBeGreaterThan(0);
      expect(report.serve.unbatched).toMatchObject({ runsOn: 'cpu', meanBatchRows: 1 });

      const [profileFile] = report.profile.files;
      expect(profileFile).toBe(join(out, 'mlp-bench-cpu-check.json'));
      const profile = loadProfile(profileFile);
      expect(profile.points!.map((p) => p.rows)).toEqual([1, 8, 32, 128]);
      expect(new ServiceModel(profile).meanMs(64)).toBeGreaterThan(0);
      // The format is the bench/profiles/ one: the capacity planner reads it as it reads those.
      const plan = await run(
        process.execPath,
        [CLI, 'plan', 'capacity', '--profile', profileFile, '--rate', '50', '--slo', '500', '--policy', 'predictive', '--json'],
        {
          timeout: 60_000,
        },
      );
      expect(JSON.parse(plan.stdout)).toMatchObject([{ policy: 'predictive', replicas: expect.any(Number) }]);
      // A CPU-only run never writes over the shipped profiles.
      expect(existsSync(fileURLToPath(new URL('../../bench/profiles/mlp-bench-cpu-check.json', import.meta.url)))).toBe(false);
    },
  );
});
