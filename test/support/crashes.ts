/**
 * Every test file fails if a process it started died of an unhandled rejection or exception.
 * In-process ones (the API most tests run in the test worker) fail the run through vitest's
 * own unhandled-error check, which vitest.config.ts keeps on explicitly.
 */
import { afterAll, expect } from 'vitest';
import { crashedChildren, liveChildren } from '../../harness/stack.ts';

afterAll(() => {
  expect(crashedChildren, 'a child process crashed on an unhandled rejection or exception').toEqual([]);
});

// Runs after the file's own afterAll hooks (registered first, so it runs last).
afterAll(() => {
  for (const child of liveChildren) child.kill('SIGKILL');
});
