/** Stand-in for the `k6` module: check, sleep, group, fail. */
import { blockFor, record } from '../runtime.ts';

type Check = ((value: unknown) => unknown) | unknown;

export function check(value: unknown, sets: Record<string, Check>, tags: Record<string, string> = {}): boolean {
  let all = true;
  for (const [name, test] of Object.entries(sets)) {
    const ok = typeof test === 'function' ? !!(test as (v: unknown) => unknown)(value) : !!test;
    record('checks', ok ? 1 : 0, { ...tags, check: name });
    all &&= ok;
  }
  return all;
}

export function sleep(seconds: number): void {
  blockFor(seconds * 1000);
}

export function group<T>(_name: string, fn: () => T): T {
  return fn();
}

export function fail(message = ''): never {
  throw new Error(message);
}

export default { check, sleep, group, fail };
