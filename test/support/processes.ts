/** Whether processes a test started have really gone, and how they went. */
import { readFileSync } from 'node:fs';
import type { Child } from '../../harness/stack.ts';

/** Alive, and not a zombie waiting for its parent to reap it (Linux reads /proc; elsewhere signal 0 decides). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/** Every process id that wrote a log line to the child's output (it and the processes it spawned). */
export function loggedPids(child: Child): number[] {
  return [...new Set([...child.output().matchAll(/"pid":(\d+)/g)].map((m) => Number(m[1])))];
}

/**
 * SIGTERM, and the exit code once the child exits, or a failure naming `deadlineMs` if it is
 * still running then (it is SIGKILLed, so nothing is left behind). A liveness check with a
 * generous deadline, not a timing.
 */
export async function stopsBefore(child: Child, deadlineMs: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), deadlineMs)));
  try {
    const code = await Promise.race([child.stop(), late]);
    if (code === 'late') {
      await child.kill('SIGKILL');
      throw new Error(`still running ${deadlineMs} ms after SIGTERM:\n${child.output().slice(-4000)}`);
    }
    return code;
  } finally {
    clearTimeout(timer);
  }
}

/** The last log line a process wrote, parsed. */
export function lastLine(child: Child, pid: number): Record<string, unknown> {
  const lines = child
    .output()
    .split('\n')
    // A request answered while shutting down logs its access line after the process's last word.
    .filter((l) => l.startsWith('{') && l.includes(`"pid":${pid},`) && !l.includes('"msg":"request"'));
  return JSON.parse(lines.at(-1)!) as Record<string, unknown>;
}
