/**
 * The execution provider chain on a machine without a GPU, through real worker processes:
 * `auto` walks the gpu pool past CUDA (no provider libraries: .npmrc skips the install step)
 * and WebGPU (no adapter) to CPU and says why, in its log, its metrics, the `models` query
 * and the operations view; an explicit `webgpu` stops the worker at start with a message
 * naming the cause, unless `workers.cpuFallback` lets it serve on CPU.
 *
 * VK_DRIVER_FILES points at no file, so the Vulkan loader finds no driver even on a machine
 * that has one: the outcome here does not depend on the machine the suite runs on.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../../cli/local-redis.ts';
import { providerChain, warmupSizes, describeChoice } from '../../core/runtime/providers.ts';
import { explainNoAdapter } from '../../core/runtime/vulkan.ts';
import { CLI, dropPrefix, spawnCli, startApi, uniquePrefix, type Child, type RunningApi } from '../../harness/stack.ts';
import { gql } from '../support/clients.ts';
import { addModel, LINEAR_CONFIG, linearOnnx, tempRepository } from '../support/model-repo.ts';
import { until } from '../support/wait.ts';

const redisUrl = inject('redisUrl');
const prefix = uniquePrefix('providers');
const models = tempRepository();
addModel(models, 'tiny-gpu', '1', linearOnnx(), {
  ...LINEAR_CONFIG,
  pool: 'gpu',
  batching: { policy: 'fixed', maxBatchSize: 8, maxDelayMs: 1 },
});
addModel(models, 'tiny-cpu', '1', linearOnnx(), LINEAR_CONFIG);
const NO_GPU = { VK_DRIVER_FILES: join(models, 'no-such-icd.json'), BATCHLINE_MAINTENANCE: 'false' };
const opts = { redisUrl, prefix, models, env: NO_GPU };

const workerLine = (w: Child, msg: RegExp): Record<string, unknown> | undefined => {
  const line = w
    .output()
    .split('\n')
    .find((l) => l.startsWith('{') && msg.test(l));
  return line ? (JSON.parse(line) as Record<string, unknown>) : undefined;
};

describe('the chain, as configured', () => {
  it('auto tries CUDA, then WebGPU, then CPU in the gpu pool, and only CPU in the cpu pool; an explicit provider is tried alone unless cpuFallback', () => {
    expect(providerChain('auto', 'gpu', false)).toEqual(['cuda', 'webgpu', 'cpu']);
    expect(providerChain('auto', 'cpu', true)).toEqual(['cpu']);
    expect(providerChain('webgpu', 'gpu', false)).toEqual(['webgpu']);
    expect(providerChain('webgpu', 'cpu', true)).toEqual(['webgpu', 'cpu']);
    expect(providerChain('cuda', 'gpu', true)).toEqual(['cuda', 'cpu']);
    expect(providerChain('cpu', 'gpu', true)).toEqual(['cpu']);
  });

  it('warms a GPU session up at the batch sizes the pool forms; a CPU session or a fixed batch once', () => {
    expect(warmupSizes('webgpu', 32, true)).toEqual([1, 2, 4, 8, 16, 32]);
    expect(warmupSizes('cuda', 48, true)).toEqual([1, 2, 4, 8, 16, 32, 48]);
    expect(warmupSizes('webgpu', 4096, true).at(-1)).toBe(1024);
    expect(warmupSizes('webgpu', 32, false)).toEqual([1]);
    expect(warmupSizes('cpu', 32, true)).toEqual([1]);
  });

  it('says what is missing for WebGPU: the loader, a driver file, or a device Dawn accepts', () => {
    expect(explainNoAdapter({ icds: [], unreadNvidiaIcds: [] })).toMatch(
      /Vulkan loader libvulkan\.so\.1 is not installed \(.*libvulkan1\)/,
    );
    expect(
      explainNoAdapter({ loader: '/usr/lib', icds: [], unreadNvidiaIcds: ['/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json'] }),
    ).toMatch(
      /no GPU driver .*NVIDIA ICD exists at \/usr\/local\/nvidia\/share\/vulkan\/icd\.d\/nvidia_icd\.json: set VK_DRIVER_FILES to it/,
    );
    expect(explainNoAdapter({ loader: '/usr/lib', icds: ['/usr/share/vulkan/icd.d/lvp_icd.json'], unreadNvidiaIcds: [] })).toMatch(
      /offered no device Dawn accepts \(driver files \/usr\/share\/vulkan\/icd\.d\/lvp_icd\.json\)/,
    );
    expect(
      describeChoice('auto', 'cpu', [{ provider: 'webgpu', ok: false, kind: 'no-adapter', reason: 'no WebGPU adapter', ms: 40 }]),
    ).toBe('cpu (requested auto); webgpu skipped: no WebGPU adapter');
  });
});

let api: RunningApi;
beforeAll(async () => {
  api = await startApi(opts);
});
afterAll(async () => {
  await api?.close();
  await dropPrefix(redisUrl, prefix);
});

/** What `models` says tiny-gpu runs on, once a worker serves it. */
async function servedOn(): Promise<string[]> {
  let on: string[] = [];
  await until(
    async () => {
      const m = await gql<{ models: { name: string; executionProviders: string[] }[] }>(api.url, '{ models { name executionProviders } }');
      on = m.body.data!.models.find((x) => x.name === 'tiny-gpu')!.executionProviders;
      return on.length > 0;
    },
    'a worker serving tiny-gpu',
    10_000,
  );
  return on;
}

describe('auto on a machine without a GPU', () => {
  let gpu: Child;
  let workerHttp: string;

  beforeAll(async () => {
    const port = await freePort();
    workerHttp = `http://127.0.0.1:${port}`;
    gpu = await spawnCli(
      ['worker', '--pool', 'gpu'],
      { ...opts, env: { ...NO_GPU, BATCHLINE_WORKER_HTTP_PORT: String(port) } },
      /"msg":"worker started"/,
    );
  });

  afterAll(async () => {
    await gpu?.stop();
  });

  it('runs the gpu pool on CPU and logs one line saying why CUDA and WebGPU were skipped', () => {
    const line = workerLine(gpu, /"msg":"gpu pool runs on /);
    expect(line, gpu.output()).toMatchObject({ level: 30, executionProvider: 'cpu', requested: 'auto' });
    expect(line!.msg).toMatch(
      /^gpu pool runs on cpu \(requested auto\); cuda skipped: CUDA provider libraries not installed .*; webgpu skipped: no WebGPU adapter: /,
    );
    expect(line!.skipped).toEqual([
      { provider: 'cuda', reason: expect.stringMatching(/libonnxruntime_providers_cuda\.so/) },
      { provider: 'webgpu', reason: expect.stringMatching(/Failed to get a WebGPU adapter/) },
    ]);
    expect(workerLine(gpu, /"msg":"worker started"/)).toMatchObject({ executionProvider: 'cpu', threads: expect.any(Number) });
  });

  it('exports the provider and the skipped ones as metric labels', async () => {
    await until(async () => (await fetch(`${workerHttp}/metrics`).catch(() => undefined))?.status === 200, 'the gpu worker’s /metrics');
    const text = await (await fetch(`${workerHttp}/metrics`)).text();
    expect(text).toMatch(/^batchline_execution_provider\{pool="gpu",provider="cpu",requested="auto",role="worker"\} 1$/m);
    expect(text).toMatch(/^batchline_execution_provider_skipped\{pool="gpu",provider="cuda",reason="not-installed",role="worker"\} 1$/m);
    expect(text).toMatch(/^batchline_execution_provider_skipped\{pool="gpu",provider="webgpu",reason="no-adapter",role="worker"\} 1$/m);
  });

  it('shows the provider in `models` and, with why, in the operations view; and serves on it', async () => {
    expect(await servedOn()).toEqual(['cpu']);
    // No worker of the cpu pool runs in this file: nobody serves tiny-cpu.
    const m = await gql<{ models: { name: string; executionProviders: string[] }[] }>(api.url, '{ models { name executionProviders } }');
    expect(m.body.data!.models.find((x) => x.name === 'tiny-cpu')!.executionProviders).toEqual([]);
    type Processes = {
      serverStats: { processes: { role: string; pool: string; executionProvider: string; executionProviderNote: string }[] };
    };
    let workers: Processes['serverStats']['processes'] = [];
    await until(
      async () => {
        const s = await gql<Processes>(api.url, '{ serverStats { processes { role pool executionProvider executionProviderNote } } }');
        workers = s.body.data!.serverStats.processes.filter((p) => p.role === 'worker');
        return workers.length === 1;
      },
      'the gpu worker in the process list',
      10_000,
    );
    expect(workers[0]).toMatchObject({ pool: 'gpu', executionProvider: 'cpu' });
    expect(workers[0].executionProviderNote).toMatch(/^cpu \(requested auto\); cuda skipped: .*; webgpu skipped: no WebGPU adapter/);
    const r = await gql<{ predict: { outputs: { data: number[] }[] } }>(
      api.url,
      '{ predict(model: "tiny-gpu", input: { features: [1, 2, 3, 4] }) { outputs { data } } }',
    );
    expect(r.body.errors).toBeUndefined();
    expect(r.body.data!.predict.outputs[0].data).toHaveLength(3);
  });
});

describe('an explicit webgpu without an adapter', () => {
  it('stops the worker at start, exit 1, naming the missing adapter and the setting that would fall back', async () => {
    const run = promisify(execFile)(process.execPath, [CLI, 'worker', '--pool', 'gpu'], {
      env: {
        ...process.env,
        ...NO_GPU,
        BATCHLINE_EXECUTION_PROVIDER: 'webgpu',
        BATCHLINE_MODELS: models,
        BATCHLINE_REDIS_URL: redisUrl,
        BATCHLINE_REDIS_PREFIX: prefix,
      },
      timeout: 30_000,
    });
    const failed = (await run.then(
      () => undefined,
      (e: unknown) => e,
    )) as { code: number; stderr: string } | undefined;
    expect(failed, 'the worker started').toBeDefined();
    expect(failed!.code).toBe(1);
    expect(failed!.stderr).toMatch(
      /execution provider: no execution provider can run \(requested webgpu\): webgpu skipped: no WebGPU adapter: .*; set workers\.cpuFallback \(BATCHLINE_CPU_FALLBACK=true\) to serve on CPU instead/,
    );
    expect(failed!.stderr).not.toMatch(/worker started/);
  });

  it('with cpuFallback serves on CPU, with one warning saying webgpu was asked for and why it is not used', async () => {
    const w = await spawnCli(
      ['worker', '--pool', 'gpu'],
      { ...opts, env: { ...NO_GPU, BATCHLINE_EXECUTION_PROVIDER: 'webgpu', BATCHLINE_CPU_FALLBACK: 'true' } },
      /"msg":"worker started"/,
    );
    try {
      const line = workerLine(w, /"msg":"gpu pool runs on /);
      expect(line).toMatchObject({ level: 40, executionProvider: 'cpu', requested: 'webgpu' });
      expect(line!.msg).toMatch(/^gpu pool runs on cpu \(requested webgpu\); webgpu skipped: no WebGPU adapter/);
      expect(w.output().match(/"msg":"gpu pool runs on /g)).toHaveLength(1);
      expect(await servedOn()).toEqual(['cpu']);
      const r = await gql(api.url, '{ predict(model: "tiny-gpu", input: { instances: [[1, 2, 3, 4], [4, 3, 2, 1]] }) { batchRows } }');
      expect(r.body.errors).toBeUndefined();
    } finally {
      expect(await w.stop()).toBe(0);
    }
  });
});
