/**
 * Waits for a condition by polling it (never a fixed sleep): fails with `what` after `timeoutMs`, inside the test timeout
 * (60 s) so the failure names what it waited for. `what` may be a function, to say at the deadline what was last seen.
 * A condition that throws ends the wait with its error (a process that exited will not become ready).
 */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string | (() => string),
  timeoutMs = 45_000,
  everyMs = 25,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
