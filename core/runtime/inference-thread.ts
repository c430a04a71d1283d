/**
 * Entry of an inference thread. onnxruntime-node's `run()` blocks the thread that calls it,
 * so sessions live here, never on an event loop that serves HTTP or renews BullMQ locks.
 * Preprocessing (text -> features) runs here too, off the worker's event loop. The first
 * models a thread loads also decide which execution provider it runs (`choose`).
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { charNgramFeatures } from '../preprocess/char-ngrams.ts';
import type { NormalizedInput } from '../prediction/input.ts';
import { ORT_TYPE, type ModelConfig } from '../models/config.ts';
import {
  cudaMissing,
  explainFailure,
  sessionOptions,
  warmupSizes,
  type ProviderAttempt,
  type ProviderName,
  type SkipKind,
} from './providers.ts';
import type { LoadedModelSpec, LoadRequest, OutputTensor, RunRequest, ThreadInit, ThreadMessage, UnloadRequest } from './types.ts';

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

/**
 * Zero-valued inputs of `rows` rows, shaped as the graph declares each input (the config may be
 * looser): `rows` in a symbolic first dimension, 1 in any other symbolic one.
 */
function zeroFeeds(session: ort.InferenceSession, config: ModelConfig, rows: number): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const t of config.inputs) {
    const meta = session.inputMetadata.find((x) => x.name === t.name);
    const graph = meta?.isTensor && meta.shape.length === t.shape.length ? meta.shape : t.shape;
    const dims = graph.map((d, i) => (typeof d === 'number' && d >= 0 ? d : i === 0 ? rows : 1));
    const size = dims.reduce((a, b) => a * b, 1);
    out[t.name] = new ort.Tensor(
      ORT_TYPE[t.datatype] as ort.Tensor.Type,
      toTypedArray(t.datatype, new Array<number>(size).fill(0)) as never,
      dims,
    );
  }
  return out;
}

type Stage = 'session' | 'warm-up';
const failedAt = (stage: Stage, e: unknown): Error & { stage: Stage } => Object.assign(new Error((e as Error).message), { stage });

/**
 * A session of `m` on `provider`, after its warm-up runs (core/runtime/providers.ts says which
 * batch sizes). Throws with `stage` saying where it failed; with `strict` false a failed warm-up
 * keeps the session (zeros are not every model's valid input: it then fails per request, as
 * before warm-ups existed).
 */
async function open(m: LoadedModelSpec, provider: ProviderName, strict: boolean): Promise<ort.InferenceSession> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(m.path, sessionOptions(provider, init.settings));
  } catch (e) {
    throw failedAt('session', e);
  }
  try {
    const batchable = m.config.inputs.every((t) => t.shape[0] === -1);
    for (const rows of warmupSizes(provider, m.config.batching.maxBatchSize, batchable))
      await session.run(zeroFeeds(session, m.config, rows));
  } catch (e) {
    if (!strict) return session;
    await session.release().catch(() => {});
    throw failedAt('warm-up', e);
  }
  return session;
}

/** How `m` fares on CPU: opens and answers its warm-up, opens but its warm-up input does not suit it, or does not open. */
async function onCpu(m: LoadedModelSpec): Promise<'runs' | 'warm-up-fails' | 'broken'> {
  try {
    await (await open(m, 'cpu', true)).release();
    return 'runs';
  } catch (e) {
    return (e as { stage: Stage }).stage === 'warm-up' ? 'warm-up-fails' : 'broken';
  }
}

let provider: ProviderName | undefined;
const attempts: ProviderAttempt[] = [];

/**
 * Walks the chain over `models`. A GPU provider is skipped as soon as a model fails on it
 * (session or warm-up) in a way it does not on CPU: that failure is the provider's. A model that
 * fails the same way on CPU is the model's (it is skipped, as any model that does not load), and
 * a warm-up input that suits the model nowhere proves nothing either way. CPU, the last resort,
 * only needs its sessions to open. When no provider is left, nothing is kept.
 */
async function choose(models: LoadedModelSpec[]): Promise<{ key: string; error: string }[]> {
  for (const candidate of init.chain) {
    const t0 = performance.now();
    const missing = candidate === 'cuda' ? cudaMissing() : undefined;
    if (missing) {
      attempts.push({ provider: candidate, ok: false, kind: 'not-installed', reason: missing, ms: 0 });
      continue;
    }
    const opened = new Map<string, ort.InferenceSession>();
    const failed: { key: string; error: string }[] = [];
    let skip: { kind: SkipKind; reason: string } | undefined;
    for (const m of models) {
      try {
        opened.set(m.key, await open(m, candidate, candidate !== 'cpu'));
        continue;
      } catch (e) {
        const { stage, message } = e as Error & { stage: Stage };
        const why = candidate === 'cpu' ? undefined : explainFailure(candidate, stage, message);
        // A missing adapter or library is the provider's whatever the model: no need to ask the CPU.
        const cpu = !why ? 'broken' : why.kind === 'no-adapter' || why.kind === 'not-installed' ? 'runs' : await onCpu(m);
        if (why && (cpu === 'runs' || (cpu === 'warm-up-fails' && stage === 'session'))) {
          skip = {
            kind: why.kind,
            reason: why.kind === 'no-adapter' || why.kind === 'not-installed' ? why.reason : `${m.key}: ${why.reason}`,
          };
          break;
        }
        if (cpu === 'warm-up-fails') {
          // Zeros do not suit this model on any provider: keep the session, unwarmed.
          try {
            opened.set(m.key, await open(m, candidate, false));
            continue;
          } catch (again) {
            failed.push({ key: m.key, error: (again as Error).message });
            continue;
          }
        }
        failed.push({ key: m.key, error: message });
      }
    }
    if (skip) {
      for (const s of opened.values()) await s.release().catch(() => {});
      attempts.push({ provider: candidate, ok: false, ...skip, ms: Math.round(performance.now() - t0) });
      continue;
    }
    attempts.push({ provider: candidate, ok: true, ms: Math.round(performance.now() - t0) });
    provider = candidate;
    for (const m of models) if (opened.has(m.key)) sessions.set(m.key, { session: opened.get(m.key)!, config: m.config });
    return failed;
  }
  return models.map((m) => ({
    key: m.key,
    error: `no execution provider can run it (${attempts.map((a) => `${a.provider}: ${a.reason}`).join('; ')})`,
  }));
}

/**
 * Creates sessions for `models` (skipping ones already loaded); returns what failed. The first
 * models a thread loads decide its provider (unless another thread's choice is given).
 */
async function load(models: LoadedModelSpec[], decided?: ProviderName): Promise<{ key: string; error: string }[]> {
  const fresh = models.filter((m) => !sessions.has(m.key));
  if (provider === undefined && decided) provider = decided;
  if (provider === undefined) return fresh.length ? choose(fresh) : [];
  const failed: { key: string; error: string }[] = [];
  for (const m of fresh) {
    try {
      sessions.set(m.key, { session: await open(m, provider, false), config: m.config });
    } catch (e) {
      failed.push({ key: m.key, error: `${(e as Error).message} (on ${provider})` });
    }
  }
  return failed;
}

async function main(): Promise<void> {
  const failed = await load(init.models);
  post({ type: 'ready', loaded: [...sessions.keys()], failed, provider, attempts });
  // One run at a time per thread: concurrency comes from threads and batching, not from
  // interleaving runs that would fight over the same intra-op threads.
  let chain = Promise.resolve();
  parentPort!.on('message', (msg: RunRequest | LoadRequest | UnloadRequest | { type: 'close' }) => {
    if (msg.type === 'unload') {
      // Queued behind runs in hand too: the worker evicts only versions with no work in flight.
      chain = chain.then(async () => {
        for (const key of msg.keys) {
          const s = sessions.get(key);
          sessions.delete(key);
          await s?.session.release().catch(() => {});
        }
        post({ type: 'unloaded', id: msg.id });
      });
      return;
    }
    if (msg.type === 'load') {
      // Queued behind runs in hand: a new version loads between inferences, never during one.
      chain = chain.then(async () => {
        const failedNow = await load(msg.models, msg.provider);
        post({ type: 'loaded', id: msg.id, loaded: [...sessions.keys()], failed: failedNow, provider, attempts });
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
