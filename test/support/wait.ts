/** Waits for a condition by polling it (never a fixed sleep): fails with `what` after `timeoutMs`, inside the test timeout (60 s) so the failure names what it waited for. */
export async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 45_000, everyMs = 25): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
