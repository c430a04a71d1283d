/**
 * One WebGPU adapter probe, in a process of its own so that Dawn's own messages (written to
 * stderr by native code, e.g. "Couldn't load Vulkan", or why an adapter was refused) can be
 * collected, and so that the environment (VK_DRIVER_FILES) can differ between tries.
 * Prints one JSON line: { ok, ms, error?, output? }.
 *
 * node bench/gpu-check/probe.ts MODEL_FILE
 */
import * as ort from 'onnxruntime-node';

const [file] = process.argv.slice(2);
const t0 = performance.now();
try {
  const session = await ort.InferenceSession.create(file, { executionProviders: ['webgpu'] });
  const input = session.inputNames[0];
  const meta = session.inputMetadata[0] as { shape?: (number | string)[] };
  const dims = (meta.shape ?? [1, 1]).map((d) => (typeof d === 'number' && d > 0 ? d : 1));
  const out = await session.run({ [input]: new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims) });
  const first = out[session.outputNames[0]].data as Float32Array;
  process.stdout.write(JSON.stringify({ ok: true, ms: Math.round(performance.now() - t0), output: Array.from(first.slice(0, 4)) }) + '\n');
  await session.release();
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, ms: Math.round(performance.now() - t0), error: (e as Error).message }) + '\n');
}
