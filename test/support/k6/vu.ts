/**
 * One virtual user: a worker thread that resolves `k6` and `k6/*` to the stand-ins in
 * modules/, sets k6's globals, evaluates a script's init context and then does what the host
 * asked (report the options, call handleSummary, call an export, or run iterations).
 */
import { registerHooks } from 'node:module';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { connectHost, definitions, Host, record, samples, TestAborted, vu } from './runtime.ts';

export type VuTask =
  | { mode: 'options' }
  | { mode: 'summary'; data: unknown }
  | { mode: 'call'; name: string; times: number }
  | { mode: 'run'; scenario: string; iterations: number };

export interface VuData {
  script: string;
  env: Record<string, string>;
  task: VuTask;
  port: MessagePort;
  signal: Int32Array;
}

const MODULES = ['k6', 'k6/http', 'k6/ws', 'k6/metrics', 'k6/execution', 'k6/encoding', 'k6/net/grpc'];

registerHooks({
  resolve(specifier, context, next) {
    if (MODULES.includes(specifier)) {
      const file = specifier === 'k6' ? 'k6' : specifier.slice(3);
      return { url: new URL(`./modules/${file}.ts`, import.meta.url).href, shortCircuit: true };
    }
    if (specifier === 'k6' || specifier.startsWith('k6/')) throw new Error(`${specifier}: not a k6 module this stand-in provides`);
    return next(specifier, context);
  },
});

const data = workerData as VuData;
vu.script = data.script;
const g = globalThis as Record<string, unknown>;
g.__ENV = { ...data.env };
g.__VU = 0; // 0 in k6's first, options-only init pass; set per VU below
g.__ITER = 0;
connectHost(new Host(data.port, data.signal));

type Script = { default?: () => void; options?: unknown; handleSummary?: (d: unknown) => unknown; [name: string]: unknown };
const script = (await import(pathToFileURL(data.script).href)) as Script;
vu.init = false;
const task = data.task;

if (task.mode === 'options') {
  parentPort!.postMessage({ options: script.options ?? {}, definitions });
} else if (task.mode === 'summary') {
  parentPort!.postMessage({ summary: script.handleSummary ? script.handleSummary(task.data) : undefined });
} else if (task.mode === 'call') {
  const fn = script[task.name] as (() => unknown) | undefined;
  if (typeof fn !== 'function') throw new Error(`${data.script} exports no function ${task.name}`);
  const results: unknown[] = [];
  for (let i = 0; i < task.times; i++) results.push(fn());
  parentPort!.postMessage({ results });
} else {
  if (typeof script.default !== 'function') throw new Error(`${data.script} has no default function`);
  vu.scenario = task.scenario;
  g.__VU = vu.id;
  const errors: string[] = [];
  let aborted: string | undefined;
  for (let i = 0; i < task.iterations && aborted === undefined; i++) {
    vu.iteration = i;
    g.__ITER = i;
    const started = performance.now();
    try {
      script.default();
    } catch (err) {
      // k6 logs an exception, ends that iteration and starts the next; abort() ends the test.
      if (err instanceof TestAborted) aborted = err.message;
      else errors.push(err instanceof Error ? err.message : String(err));
    }
    record('iterations', 1);
    record('iteration_duration', performance.now() - started);
  }
  parentPort!.postMessage({ samples, definitions, aborted, errors });
}
