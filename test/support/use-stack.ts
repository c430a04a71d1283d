/** A test file's stack, started before its tests and stopped after. */
import { afterAll, beforeAll } from 'vitest';
import { dropPrefix, startApi, startWorker, type Child, type RunningApi, type StackOptions } from '../../harness/stack.ts';

/**
 * Starts workers of `pools` and an API for the test file (beforeAll) and stops them and
 * drops the file's keys (afterAll). Read `stack.api` inside tests.
 */
export function useStack(o: StackOptions & { grpc?: boolean }, pools: ('cpu' | 'gpu')[] = ['cpu']): { api: RunningApi; workers: Child[] } {
  const stack = { api: undefined as unknown as RunningApi, workers: [] as Child[] };
  beforeAll(async () => {
    for (const pool of pools) stack.workers.push(await startWorker(pool, o));
    stack.api = await startApi(o);
  });
  afterAll(async () => {
    await stack.api?.close();
    await Promise.all(stack.workers.map((w) => w.stop()));
    await dropPrefix(o.redisUrl, o.prefix);
  });
  return stack;
}
