/**
 * Entry of an inference thread. onnxruntime-node's `run()` blocks the thread that calls it,
 * so sessions live here, never on an event loop that serves HTTP or renews BullMQ locks.
 * Preprocessing (text -> features) runs here too, off the worker's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { charNgramFeatures } from '../preprocess/char-ngrams.ts';
import type { NormalizedInput } from '../prediction/input.ts';
import { ORT_TYPE, type ModelConfig } from '../models/config.ts';
import type { LoadedModelSpec, LoadRequest, OutputTensor, RunRequest, ThreadInit, ThreadMessage } from './types.ts';

const init = workerData as ThreadInit;
const sessions = new Map<string, { session: ort.InferenceSession; config: ModelConfig }>();

function post(msg: ThreadMessage, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(msg, transfer);
}

function toTypedArray(datatype: string, values: ArrayLike<number>): ort.Tensor['data'] {
  if (datatype === 'FP32' && values instanceof Float32Array) return values;
  switch (datatype) {
    case 'FP32':
      return Float32Array.from(values);
    case 'FP64':
      return Float64Array.from(values);
    case 'INT32':
      return Int32Array.from(values);
    case 'INT64':
      return BigInt64Array.from(Array.from(values), (v) => BigInt(v));
    case 'UINT8':
      return Uint8Array.from(values);
    case 'INT8':
      return Int8Array.from(values);
    case 'BOOL':
      return Uint8Array.from(values);
    default:
      throw new Error(`unsupported datatype ${datatype}`);
  }
}

function feeds(config: ModelConfig, input: NormalizedInput): { feeds: Record<string, ort.Tensor>; rows: number } {
  if (input.kind === 'text') {
    const pre = config.preprocessing!;
    const dims = pre.dims;
    const data = new Float32Array(input.texts.length * dims);
    input.texts.forEach((t, i) => charNgramFeatures(t, pre, data.subarray(i * dims, (i + 1) * dims)));
    return { feeds: { [config.inputs[0].name]: new ort.Tensor('float32', data, [input.texts.length, dims]) }, rows: input.texts.length };
  }
  const out: Record<string, ort.Tensor> = {};
  for (const t of input.tensors) {
    const type = ORT_TYPE[t.datatype] as ort.Tensor.Type;
    out[t.name] = new ort.Tensor(type, toTypedArray(t.datatype, t.data) as never, t.shape);
  }
  return { feeds: out, rows: input.tensors[0].shape[0] };
}

const DATATYPE_OF: Record<string, string> = Object.fromEntries(Object.entries(ORT_TYPE).map(([k, v]) => [v, k]));

async function run(req: RunRequest): Promise<void> {
  const loaded = sessions.get(req.key);
  if (!loaded) {
    post({ type: 'error', id: req.id, code: 'MODEL_NOT_READY', message: `model ${req.key} is not loaded in this worker` });
    return;
  }
  try {
    const { feeds: f, rows } = feeds(loaded.config, req.input);
    const t0 = performance.now();
    const result = await loaded.session.run(f);
    const inferenceMs = performance.now() - t0;
    const outputs: OutputTensor[] = [];
    const transfer: ArrayBuffer[] = [];
    for (const spec of loaded.config.outputs) {
      const t = result[spec.name];
      let data = t.data as OutputTensor['data'];
      if (typeof data === 'string' || Array.isArray(data)) throw new Error(`output ${spec.name} is not numeric`);
      if (t.type === 'bool') data = Uint8Array.from(data as Uint8Array);
      else data = (data as Float32Array).slice();
      transfer.push((data as Float32Array).buffer as ArrayBuffer);
      outputs.push({ name: spec.name, datatype: DATATYPE_OF[t.type] ?? t.type, shape: [...t.dims], data });
    }
    post({ type: 'result', id: req.id, outputs, inferenceMs, rows }, transfer);
  } catch (e) {
    post({ type: 'error', id: req.id, code: 'INFERENCE_FAILED', message: (e as Error).message });
  }
}

/** Creates sessions for `models` (skipping ones already loaded); returns what failed. */
async function load(models: LoadedModelSpec[]): Promise<{ key: string; error: string }[]> {
  const failed: { key: string; error: string }[] = [];
  const providers: ort.InferenceSession.ExecutionProviderConfig[] = init.executionProvider === 'cuda' ? ['cuda', 'cpu'] : ['cpu'];
  for (const m of models) {
    if (sessions.has(m.key)) continue;
    try {
      const session = await ort.InferenceSession.create(m.path, {
        executionProviders: providers,
        intraOpNumThreads: init.intraOpThreads,
        interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
        // Idle intra-op threads spin; with several threads and processes sharing cores that steals CPU.
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
      sessions.set(m.key, { session, config: m.config });
    } catch (e) {
      failed.push({ key: m.key, error: (e as Error).message });
    }
  }
  return failed;
}

async function main(): Promise<void> {
  const failed = await load(init.models);
  post({ type: 'ready', loaded: [...sessions.keys()], failed, executionProvider: init.executionProvider });
  // One run at a time per thread: concurrency comes from threads and batching, not from
  // interleaving runs that would fight over the same intra-op threads.
  let chain = Promise.resolve();
  parentPort!.on('message', (msg: RunRequest | LoadRequest | { type: 'close' }) => {
    if (msg.type === 'load') {
      // Queued behind runs in hand: a new version loads between inferences, never during one.
      chain = chain.then(async () => {
        const failedNow = await load(msg.models);
        post({ type: 'loaded', id: msg.id, loaded: [...sessions.keys()], failed: failedNow });
      });
      return;
    }
    if (msg.type === 'close') {
      chain = chain.then(async () => {
        for (const { session } of sessions.values()) await session.release();
        process.exit(0);
      });
      return;
    }
    chain = chain.then(() => run(msg));
  });
}

void main();
