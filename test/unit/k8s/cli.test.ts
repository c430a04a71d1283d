import { describe, it, expect } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runK8sCli } from '../../../k8s/cli.ts';
import { measureModel, latestVersion } from '../../../k8s/measure.ts';
import { writeTinyRepository } from './fixtures/tiny-model.ts';
import { EXAMPLES_DIR, GOLDEN_DIR, exampleText } from './manifests.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'batchline-k8s-cli-'));
const DEMO_MODELS = fileURLToPath(new URL('../../../models/', import.meta.url));

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runK8sCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

describe('batchline k8s', () => {
  it('render prints the golden stream', async () => {
    const r = await cli('k8s', 'render', `${EXAMPLES_DIR}gpu.yaml`);
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out).toBe(readFileSync(`${GOLDEN_DIR}gpu.yaml`, 'utf8'));
  });

  it('render --out writes one file per manifest, in apply order', async () => {
    const dir = tmp();
    const r = await cli('k8s', 'render', `${EXAMPLES_DIR}cpu-only.yaml`, '--out', dir);
    expect(r.code).toBe(0);
    const files = readdirSync(dir).sort();
    expect(files[0]).toBe('01-configmap-batchline-config.yaml');
    expect(files).toContain('05-deployment-batchline-worker-cpu.yaml');
    expect(files.map((f) => `---\n${readFileSync(join(dir, f), 'utf8')}`).join('')).toBe(
      readFileSync(`${GOLDEN_DIR}cpu-only.yaml`, 'utf8'),
    );
  });

  it('explain prints the golden explanation', async () => {
    const r = await cli('k8s', 'explain', `${EXAMPLES_DIR}laptop.yaml`);
    expect(r.code).toBe(0);
    expect(r.out).toBe(readFileSync(`${GOLDEN_DIR}laptop.explain.txt`, 'utf8'));
    expect(r.out).toContain('decided by:       memory');
  });

  it('rejects an invalid resource with exit 1 and every message', async () => {
    const file = join(tmp(), 'bad.yaml');
    writeFileSync(file, exampleText('cpu-only.yaml').replace('memory: 1Gi', 'memory: 200Mi').replace('modelMemory: 256Mi', ''));
    const r = await cli('k8s', 'render', file);
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toContain(
      `invalid ModelServer ${file}:\n  - spec.pools.cpu.resources.limits.memory: cpu pool: memory limit 200 MiB cannot hold one copy`,
    );
  });

  it('prints usage with exit 2', async () => {
    expect((await cli('k8s', 'deploy', 'x')).code).toBe(2);
    expect((await cli('k8s', 'render')).code).toBe(2);
    expect((await cli('model', 'measure')).err).toContain('usage:');
  });

  it('reports a missing file with exit 1', async () => {
    const r = await cli('k8s', 'explain', '/no/such/file.yaml');
    expect(r.code).toBe(1);
    expect(r.err).toContain('ENOENT');
  });
});

describe('batchline model measure', () => {
  it('measures resident memory after warm-up on the declared inputs', async () => {
    const dir = writeTinyRepository(tmp());
    const m = await measureModel(dir, 'tiny');
    expect(m).toMatchObject({ model: 'tiny', version: '1', batchSizes: [1, 8] });
    // The weights alone are 256 KiB; the session and its arena add more.
    expect(m.residentBytes).toBeGreaterThan(0);
    expect(m.residentBytes).toBeLessThan(256 * 2 ** 20);
    // The high-water mark is read after the resident figure, so it cannot be below it.
    expect(m.peakBytes).toBeGreaterThanOrEqual(m.residentBytes);
    expect(m.baselineBytes).toBeGreaterThan(10 * 2 ** 20);
  });

  it("falls back to the graph's own inputs when config.yaml declares none", async () => {
    const dir = writeTinyRepository(tmp(), ['1'], false);
    expect((await measureModel(dir, 'tiny')).residentBytes).toBeGreaterThan(0);
  });

  it('reads the config as the server does: the version over the model, the deployment over both', async () => {
    const dir = writeTinyRepository(tmp());
    writeFileSync(join(dir, 'tiny', '1', 'config.yaml'), 'batching: { maxBatchSize: 6 }\n');
    expect((await measureModel(dir, 'tiny')).batchSizes).toEqual([1, 6]);
    const overrides = join(dir, 'overrides.yaml');
    writeFileSync(overrides, 'tiny:\n  pool: gpu\n  batching: { maxBatchSize: 4 }\n');
    expect((await measureModel(dir, 'tiny', undefined, { overridesFile: overrides })).batchSizes).toEqual([1, 4]);
    const text = await cli('model', 'measure', 'tiny', '--models', dir, '--overrides', overrides);
    expect(text.out).toContain('(batches 1 and 4)');
  });

  it('picks the newest version, numerically', () => {
    const dir = writeTinyRepository(tmp(), ['1', '2', '10']);
    expect(latestVersion(join(dir, 'tiny'))).toBe('10');
  });

  it('names what is missing', async () => {
    const dir = writeTinyRepository(tmp());
    await expect(measureModel(dir, 'nope')).rejects.toThrow(`model 'nope' not found in ${dir}`);
    await expect(measureModel(dir, 'tiny', '7')).rejects.toThrow(/version 7: .*model\.onnx not found/);
  });

  it('prints a line to record, or JSON', async () => {
    const dir = writeTinyRepository(tmp());
    const text = await cli('model', 'measure', 'tiny', '--models', dir);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/^tiny version 1: [\d.]+ MiB resident after warm-up \(batches 1 and 8\)/);
    expect(text.out).toMatch(/record in the ModelServer: {2}- \{ name: tiny, memory: \d+Mi \}/);
    const json = await cli('model', 'measure', 'tiny', '--models', dir, '--json');
    expect(JSON.parse(json.out)).toMatchObject({ model: 'tiny', version: '1', memory: expect.stringMatching(/^\d+Mi$/) });
  });

  it.skipIf(!existsSync(join(DEMO_MODELS, 'name-gender')))('measures the demo model within what the examples record', async () => {
    const m = await measureModel(DEMO_MODELS, 'name-gender');
    // The examples record 14Mi; a measurement far above it means they need updating.
    expect(m.residentBytes).toBeLessThan(2 * 14 * 2 ** 20);
  });
});
