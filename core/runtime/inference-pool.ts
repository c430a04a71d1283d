/**
 * A fixed set of inference threads, each holding its own sessions of the pool's models.
 * A run goes to the thread with the fewest runs in hand. The first thread walks the chain of
 * execution providers (core/runtime/providers.ts); the others start on the provider it took.
 */
import { Worker } from 'node:worker_threads';
import { ServingError, isErrorCode } from '../errors/registry.ts';
import type { NormalizedInput } from '../prediction/input.ts';
import { describeChoice, type ProviderAttempt, type ProviderName, type ProviderRequest, type ProviderSettings } from './providers.ts';
import type { LoadedModelSpec, OutputTensor, ProviderOutcome, ThreadInit, ThreadMessage } from './types.ts';

export interface InferencePoolOptions {
  models: LoadedModelSpec[];
  /** Number of inference threads, once the provider is known (a GPU is usually given one: batching feeds it). */
  threads: number | ((provider: ProviderName | undefined) => number);
  /** Providers to try, in order. */
  chain: ProviderName[];
  /** What was asked for, for the messages. @defaultValue the chain's only provider, or 'auto' */
  requested?: ProviderRequest;
  settings: ProviderSettings;
}

/** No provider of the chain can run the pool's models: the message says why, provider by provider. */
export class ProviderUnavailableError extends Error {
  readonly attempts: ProviderAttempt[];
  constructor(message: string, attempts: ProviderAttempt[]) {
    super(message);
    this.name = 'ProviderUnavailableError';
    this.attempts = attempts;
  }
}

export interface RunResult {
  outputs: OutputTensor[];
  inferenceMs: number;
  rows: number;
  /** Time the run waited in a queue first, when the runner knows it (the API's edge batches). */
  queueMs?: number;
}

interface Pending {
  resolve: (r: RunResult) => void;
  reject: (e: Error) => void;
  thread: ThreadHandle;
}

interface ThreadHandle {
  worker: Worker;
  inFlight: number;
  /** Versions with a session in this thread. */
  keys: Set<string>;
}

const THREAD_ENTRY = new URL('./inference-thread.ts', import.meta.url);

export class InferencePool {
  private readonly threads: ThreadHandle[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly loads = new Map<number, (msg: Extract<ThreadMessage, { type: 'loaded' }>) => void>();
  private readonly unloads = new Map<number, () => void>();
  private nextId = 1;
  private closed = false;
  /** Models every thread loaded. */
  loaded: string[] = [];
  failed: { key: string; error: string }[] = [];
  /** The provider the sessions run on; undefined until a thread has had models to decide with. */
  provider?: ProviderName;
  /** The chain as the first thread walked it: the provider taken and why those before it were skipped. */
  attempts: ProviderAttempt[] = [];
  private requested: ProviderRequest = 'auto';
  private init!: ThreadInit;

  /**
   * Starts the threads and waits until each has loaded its sessions: the first walks the chain,
   * the rest start on what it took. Rejects with ProviderUnavailableError when the pool has
   * models and no provider of the chain runs them.
   */
  static async start(options: InferencePoolOptions): Promise<InferencePool> {
    const pool = new InferencePool();
    pool.requested = options.requested ?? (options.chain.length === 1 ? options.chain[0] : 'auto');
    pool.init = { models: options.models, chain: options.chain, settings: options.settings };
    await pool.spawn(pool.init);
    if (!pool.provider && options.models.length > 0) {
      const hint =
        pool.requested === 'cuda' || pool.requested === 'webgpu'
          ? '; set workers.cpuFallback (BATCHLINE_CPU_FALLBACK=true) to serve on CPU instead'
          : '';
      const message = `execution provider: ${describeChoice(pool.requested, undefined, pool.attempts)}${hint}`;
      await pool.close();
      throw new ProviderUnavailableError(message, pool.attempts);
    }
    const total = typeof options.threads === 'function' ? options.threads(pool.provider) : options.threads;
    const rest = { ...pool.init, chain: pool.provider ? [pool.provider] : options.chain };
    await Promise.all(Array.from({ length: Math.max(1, total) - 1 }, () => pool.spawn(rest)));
    return pool;
  }

  /** One line: the provider and why the ones before it were skipped. */
  describe(): string {
    return describeChoice(this.requested, this.provider, this.attempts);
  }

  private decided(outcome: ProviderOutcome): void {
    if (this.provider || !outcome.provider) return;
    this.provider = outcome.provider;
    this.attempts = outcome.attempts;
  }

  private spawn(init: ThreadInit): Promise<void> {
    return new Promise((resolve, reject) => {
      // Named, so /proc/<pid>/task/*/comm tells its CPU apart (bench/worker-share.ts).
      const worker = new Worker(THREAD_ENTRY, { workerData: init, name: 'inference' });
      const handle: ThreadHandle = { worker, inFlight: 0, keys: new Set() };
      worker.on('message', (msg: ThreadMessage) => {
        if (msg.type === 'ready') {
          handle.keys = new Set(msg.loaded);
          this.loaded = msg.loaded;
          this.failed = msg.failed;
          if (this.threads.length === 0) this.attempts = msg.attempts;
          this.decided(msg);
          this.threads.push(handle);
          resolve();
          return;
        }
        if (msg.type === 'loaded') {
          this.loads.get(msg.id)?.(msg);
          return;
        }
        if (msg.type === 'unloaded') {
          this.unloads.get(msg.id)?.();
          return;
        }
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        p.thread.inFlight--;
        if (msg.type === 'result') p.resolve({ outputs: msg.outputs, inferenceMs: msg.inferenceMs, rows: msg.rows });
        else p.reject(new ServingError(isErrorCode(msg.code) ? msg.code : 'INFERENCE_FAILED', msg.message));
      });
      worker.on('error', (err) => {
        reject(err);
        this.failThread(handle, err);
      });
      worker.on('exit', (code) => {
        if (!this.closed) this.failThread(handle, new Error(`inference thread exited with code ${code}`));
      });
    });
  }

  private failThread(handle: ThreadHandle, err: Error): void {
    const i = this.threads.indexOf(handle);
    if (i >= 0) this.threads.splice(i, 1);
    for (const [id, p] of this.pending) {
      if (p.thread !== handle) continue;
      this.pending.delete(id);
      p.reject(new ServingError('INFERENCE_FAILED', `inference thread failed: ${err.message}`));
    }
  }

  get size(): number {
    return this.threads.length;
  }

  /**
   * Loads more models into every thread (a new version found by the repository poll).
   * Resolves with the keys every thread now holds and what failed.
   */
  async load(
    models: LoadedModelSpec[],
    options: { oneThread?: boolean } = {},
  ): Promise<{ loaded: string[]; failed: { key: string; error: string }[] }> {
    const send = (t: ThreadHandle): Promise<Extract<ThreadMessage, { type: 'loaded' }>> =>
      new Promise((resolve) => {
        const id = this.nextId++;
        // A thread busy loading counts as busy: runs of resident models go to the others meanwhile.
        t.inFlight++;
        this.loads.set(id, (msg) => {
          this.loads.delete(id);
          t.inFlight--;
          t.keys = new Set(msg.loaded);
          resolve(msg);
        });
        t.worker.postMessage({ type: 'load', id, models, provider: this.provider });
      });
    if (options.oneThread && this.threads.length > 0) {
      // On demand: into the least busy thread only (the first while the provider is undecided: it walks the chain).
      // Loading blocks that thread; the others keep running the versions they hold.
      let t = this.threads[0];
      if (this.provider)
        for (const c of this.threads) if (c.inFlight < t.inFlight || (c.inFlight === t.inFlight && c.keys.size < t.keys.size)) t = c;
      const reply = await send(t);
      this.decided(reply);
      return { loaded: models.map((m) => m.key).filter((k) => reply.loaded.includes(k)), failed: reply.failed };
    }
    // Started without models, the pool decides its provider now: the first thread walks the chain, the rest follow it.
    const first = this.provider || this.threads.length === 0 ? [] : [await send(this.threads[0])];
    if (first[0]) this.decided(first[0]);
    const replies = [...first, ...(await Promise.all(this.threads.slice(first.length).map(send)))];
    const loaded = replies.reduce<string[]>((acc, r, i) => (i === 0 ? r.loaded : acc.filter((k) => r.loaded.includes(k))), []);
    this.loaded = loaded;
    return { loaded, failed: replies.flatMap((r) => r.failed) };
  }

  /** Releases the sessions of `keys` in the threads holding them, after the runs each has in hand (an eviction). */
  async unload(keys: string[]): Promise<void> {
    await Promise.all(
      this.threads
        .filter((t) => keys.some((k) => t.keys.has(k)))
        .map(
          (t) =>
            new Promise<void>((resolve) => {
              for (const k of keys) t.keys.delete(k);
              const id = this.nextId++;
              this.unloads.set(id, () => {
                this.unloads.delete(id);
                resolve();
              });
              t.worker.postMessage({ type: 'unload', id, keys });
            }),
        ),
    );
    this.loaded = this.loaded.filter((k) => !keys.includes(k));
  }

  /**
   * Runs one inference of model `key` over `input` (which may hold several requests' rows).
   * With `transfer`, the input's typed arrays are moved to the inference thread, not cloned:
   * the caller owns them and does not read them again (they are detached once this returns).
   */
  run(key: string, input: NormalizedInput, options: { transfer?: boolean } = {}): Promise<RunResult> {
    if (this.closed || this.threads.length === 0)
      return Promise.reject(new ServingError('MODEL_NOT_READY', 'no inference thread is running'));
    // The least busy thread of those holding the version (under a budget usually one), else any: it answers MODEL_NOT_READY.
    const holders = this.threads.filter((t) => t.keys.has(key));
    const candidates = holders.length ? holders : this.threads;
    let thread = candidates[0];
    for (const t of candidates) if (t.inFlight < thread.inFlight) thread = t;
    const id = this.nextId++;
    thread.inFlight++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, thread });
      thread.worker.postMessage({ type: 'run', id, key, input }, options.transfer ? transferable(input) : []);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.threads.map(
        (t) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => void t.worker.terminate().then(() => resolve()), 5000);
            t.worker.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            t.worker.postMessage({ type: 'close' });
          }),
      ),
    );
  }
}

/** The buffers of `input`'s typed arrays, each once: those a run can move to its thread. */
function transferable(input: NormalizedInput): ArrayBuffer[] {
  if (input.kind !== 'tensors') return [];
  const out = new Set<ArrayBuffer>();
  for (const t of input.tensors) if (ArrayBuffer.isView(t.data) && t.data.buffer instanceof ArrayBuffer) out.add(t.data.buffer);
  return [...out];
}
