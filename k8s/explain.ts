/**
 * `batchline k8s explain`: per pool, the limits, each bound, the one that decided, and
 * the resulting slots, threads and autoscaling target; and, where a pool states an expected
 * rate, the replicas the simulation needs for it.
 */
import { mib } from '../core/worker/sizing.ts';
import type { LoadedServer } from './load.ts';
import { parseQuantity } from './quantity.ts';
import type { PoolSizing } from './plan.ts';
import { suggestionText } from './capacity.ts';

function replicas(loaded: LoadedServer, p: PoolSizing): string {
  const { minReplicas, maxReplicas } = p.spec.autoscaling;
  switch (loaded.server.spec.autoscaling.provider) {
    case 'none':
      return `${minReplicas} (fixed)`;
    case 'hpa':
      return `${minReplicas}..${maxReplicas} on CPU at ${p.spec.autoscaling.targetCPUUtilization}% (HorizontalPodAutoscaler)`;
    case 'keda':
      return `${minReplicas}..${maxReplicas} on queue depth ${p.targetQueueDepth} per replica (KEDA; ${p.targetFrom})`;
  }
}

function row(label: string, text: string): string {
  return `  ${`${label}:`.padEnd(18)}${text}`;
}

/** `memory bound: text` from the plan, aligned with the other rows. */
function step(line: string): string {
  const at = line.indexOf(': ');
  return row(line.slice(0, at), line.slice(at + 2));
}

function pool(loaded: LoadedServer, p: PoolSizing): string[] {
  const { limits, plan } = p;
  const gpu =
    p.pool === 'gpu'
      ? `, ${limits.gpus} GPU of ${limits.gpuMemoryBytes !== undefined ? mib(limits.gpuMemoryBytes) : 'unknown memory'}`
      : '';
  const models = p.models.map((m) => `${m.name} ${mib(parseQuantity(m.memory))}`).join(', ');
  const result =
    `${plan.slots} slot${plan.slots === 1 ? '' : 's'} x ${plan.intraOpThreads} intra-op thread${plan.intraOpThreads === 1 ? '' : 's'}, ` +
    `concurrency ${plan.concurrency}${p.pool === 'gpu' ? ` (slots x batch ${p.batchSize})` : ''}`;
  return [
    `pool ${p.pool}`,
    row('limits', `${limits.cpuCores} CPU, ${mib(limits.memoryBytes)} memory${gpu}`),
    row(
      'models',
      p.spec.modelMemory !== undefined
        ? `${models} (loaded on demand into the model memory budget, each into one slot)`
        : `${models} (each slot loads all of them)`,
    ),
    ...(plan.modelMemoryBytes !== undefined && p.spec.modelMemory === undefined
      ? [
          row(
            'model memory',
            `${mib(plan.modelMemoryBytes)}: what the ${mib(limits.memoryBytes)} limit leaves after the base and ${plan.slots} slot overhead${plan.slots === 1 ? '' : 's'}; all of them fit, each loads on its first request and stays (set modelMemory for a smaller budget)`,
          ),
        ]
      : []),
    ...plan.explanation.slice(0, -1).map(step),
    row('decided by', plan.decidedBy),
    row('result', result),
    row('replicas', replicas(loaded, p)),
    ...(loaded.suggestions?.[p.pool]
      ? [row('expected rate', suggestionText(loaded.suggestions[p.pool]!, p.spec.autoscaling.maxReplicas))]
      : []),
    row('startup', `${p.startupSeconds} s allowed for loading before liveness checks`),
  ];
}

/** The explanation as text, one block per pool. */
export function explain(loaded: LoadedServer): string {
  const { metadata } = loaded.server;
  const head = `ModelServer ${metadata.namespace ? `${metadata.namespace}/` : ''}${metadata.name}`;
  return [head, ...loaded.pools.flatMap((p) => ['', ...pool(loaded, p)])].join('\n') + '\n';
}
