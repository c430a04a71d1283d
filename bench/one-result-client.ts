/**
 * A client process of bench/unsubscribe-in-next.ts: runs harness/one-result-loops.ts once with
 * the options in argv[2] (JSON), asks the server about the ids whose result never came, and
 * prints one JSON line: the counts, the ids the server had COMPLETED, and this process's CPU.
 */
import { completedOnServer, runOneResultLoops, type LoopOptions } from '../harness/one-result-loops.ts';

const options = JSON.parse(process.argv[2]) as LoopOptions;
const cpu0 = process.cpuUsage();
const counts = await runOneResultLoops(options);
const cpu = process.cpuUsage(cpu0);
const completedButUndelivered = (await completedOnServer(options.url, counts.undeliveredIds)).length;
process.stdout.write(JSON.stringify({ ...counts, completedButUndelivered, clientCpuMs: (cpu.user + cpu.system) / 1000 }) + '\n', () =>
  process.exit(0),
);
