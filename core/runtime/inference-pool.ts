/**
 * A fixed set of inference threads, each holding its own sessions of the pool's models.
 * A run goes to the thread with the fewest runs in hand.
 */
import { Worker } from 'node:worker_threads';
import { ServingError, isErrorCode } from '../errors/registry.ts';
import type { NormalizedInput } from '../prediction/input.ts';
import type { LoadedModelSpec, OutputTensor, ThreadMessage } from './types.ts';

export interface InferencePoolOptions {
  models: LoadedModelSpec[];
  /** Number of inference threads. */
  threads: number;
  /** onnxruntime intra-op threads per inference thread. */
  intraOpThreads: number;
  executionProvider: 'cpu' | 'cuda';
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
}

const THREAD_ENTRY = new URL('./inference-thread.ts', import.meta.url);

export class InferencePool {
  private readonly threads: ThreadHandle[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly loads = new Map<number, (msg: Extract<ThreadMessage, { type: 'loaded' }>) => void>();
  private nextId = 1;
  private closed = false;
  /** Models every thread loaded. */
  loaded: string[] = [];
  failed: { key: string; error: string }[] = [];

  /** Starts the threads and waits until each has loaded its sessions. */
  static async start(options: InferencePoolOptions): Promise<InferencePool> {
    const pool = new InferencePool();
    await Promise.all(Array.from({ length: Math.max(1, options.threads) }, () => pool.spawn(options)));
    return pool;
  }

  private spawn(options: InferencePoolOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(THREAD_ENTRY, {
        workerData: { models: options.models, intraOpThreads: options.intraOpThreads, executionProvider: options.executionProvider },
      });
      const handle: ThreadHandle = { worker, inFlight: 0 };
      worker.on('message', (msg: ThreadMessage) => {
        if (msg.type === 'ready') {
          this.loaded = msg.loaded;
          this.failed = msg.failed;
          this.threads.push(handle);
          resolve();
          return;
        }
        if (msg.type === 'loaded') {
          this.loads.get(msg.id)?.(msg);
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
  async load(models: LoadedModelSpec[]): Promise<{ loaded: string[]; failed: { key: string; error: string }[] }> {
    const replies = await Promise.all(
      this.threads.map(
        (t) =>
          new Promise<Extract<ThreadMessage, { type: 'loaded' }>>((resolve) => {
            const id = this.nextId++;
            this.loads.set(id, (msg) => {
              this.loads.delete(id);
              resolve(msg);
            });
            t.worker.postMessage({ type: 'load', id, models });
          }),
      ),
    );
    const loaded = replies.reduce<string[]>((acc, r, i) => (i === 0 ? r.loaded : acc.filter((k) => r.loaded.includes(k))), []);
    this.loaded = loaded;
    return { loaded, failed: replies.flatMap((r) => r.failed) };
  }

  /** Runs one inference of model `key` over `input` (which may hold several requests' rows). */
  run(key: string, input: NormalizedInput): Promise<RunResult> {
    if (this.closed || this.threads.length === 0)
      return Promise.reject(new ServingError('MODEL_NOT_READY', 'no inference thread is running'));
    let thread = this.threads[0];
    for (const t of this.threads) if (t.inFlight < thread.inFlight) thread = t;
    const id = this.nextId++;
    thread.inFlight++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, thread });
      thread.worker.postMessage({ type: 'run', id, key, input });
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
