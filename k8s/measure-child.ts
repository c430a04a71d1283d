/**
 * Child process of `measureModel` (k8s/measure.ts): loads one ONNX model, warms it up on
 * zeros and prints one JSON line with the resident memory before and after. A process of
 * its own, so nothing else (the CLI, a test runner) is in the numbers.
 *
 * argv[2]: JSON { path, inputs: [{ name, datatype, shape }] | null, batchSizes: number[] }
 */
import * as ort from 'onnxruntime-node';

interface Input {
  name: string;
  datatype: string;
  shape: (number | string)[];
}

const TYPES: Record<string, { type: ort.Tensor.Type; make: (n: number) => ort.Tensor.DataType }> = {
  FP32: { type: 'float32', make: (n) => new Float32Array(n) },
  float32: { type: 'float32', make: (n) => new Float32Array(n) },
  FP64: { type: 'float64', make: (n) => new Float64Array(n) },
  float64: { type: 'float64', make: (n) => new Float64Array(n) },
  INT32: { type: 'int32', make: (n) => new Int32Array(n) },
  int32: { type: 'int32', make: (n) => new Int32Array(n) },
  INT64: { type: 'int64', make: (n) => new BigInt64Array(n) },
  int64: { type: 'int64', make: (n) => new BigInt64Array(n) },
  BOOL: { type: 'bool', make: (n) => new Uint8Array(n) },
  bool: { type: 'bool', make: (n) => new Uint8Array(n) },
  UINT8: { type: 'uint8', make: (n) => new Uint8Array(n) },
  uint8: { type: 'uint8', make: (n) => new Uint8Array(n) },
  INT8: { type: 'int8', make: (n) => new Int8Array(n) },
  int8: { type: 'int8', make: (n) => new Int8Array(n) },
};

/** Zeros of the input's shape: the first dimension is the batch, other dynamic ones are 1. */
function zeros(input: Input, batch: number): ort.Tensor {
  const dims = input.shape.map((d, i) => (i === 0 ? batch : typeof d === 'number' && d > 0 ? d : 1));
  const t = TYPES[input.datatype];
  if (!t) throw new Error(`input ${input.name}: unsupported datatype ${input.datatype}`);
  return new ort.Tensor(t.type, t.make(dims.reduce((a, b) => a * b, 1)), dims);
}

function settle(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

const spec = JSON.parse(process.argv[2]) as { path: string; inputs: Input[] | null; batchSizes: number[] };
// Something must run first, so onnxruntime's own libraries are in the baseline, not the model.
await ort.InferenceSession.create(new Uint8Array(0)).catch(() => undefined);
settle();
const baselineBytes = process.memoryUsage().rss;
const t0 = performance.now();
const session = await ort.InferenceSession.create(spec.path, { intraOpNumThreads: 1, interOpNumThreads: 1 });
const loadMs = performance.now() - t0;
const inputs: Input[] =
  spec.inputs ??
  session.inputMetadata.map((m) => {
    if (!m.isTensor) throw new Error(`input ${m.name} is not a tensor`);
    return { name: m.name, datatype: m.type, shape: [...m.shape] };
  });
const t1 = performance.now();
for (const batch of spec.batchSizes) {
  for (let i = 0; i < 3; i++) {
    await session.run(Object.fromEntries(inputs.map((input) => [input.name, zeros(input, batch)])));
  }
}
const warmupMs = performance.now() - t1;
settle();
const afterBytes = process.memoryUsage().rss;
const peakBytes = process.resourceUsage().maxRSS * 1024;
process.stdout.write(JSON.stringify({ baselineBytes, afterBytes, peakBytes, loadMs, warmupMs }) + '\n');
