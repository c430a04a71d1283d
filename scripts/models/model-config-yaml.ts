/** Writes a model's config.yaml in the compact, flow-style layout the repository uses. */
import type { ModelConfig, TensorSpec } from '../../core/models/config.ts';

function scalar(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'string') return /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(value) && !/^(true|false|null|yes|no|on|off|~)$/i.test(value) ? value : JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(scalar).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    return `{ ${Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}: ${scalar(v)}`)
      .join(', ')} }`;
  }
  throw new Error(`cannot write ${String(value)} to YAML`);
}

function tensors(specs: TensorSpec[]): string {
  return specs.map((s) => `  - ${scalar({ name: s.name, datatype: s.datatype, shape: s.shape })}`).join('\n');
}

export function modelConfigYaml(config: ModelConfig, header: string): string {
  const lines = [
    ...header.split('\n').map((l) => `# ${l}`.trimEnd()),
    `name: ${scalar(config.name)}`,
    config.description !== undefined ? `description: ${scalar(config.description)}` : undefined,
    `pool: ${config.pool}`,
    `task: ${config.task}`,
    'inputs:',
    tensors(config.inputs),
    'outputs:',
    tensors(config.outputs),
    config.labels !== undefined ? `labels: ${scalar(config.labels)}` : undefined,
    config.scoresOutput !== undefined ? `scoresOutput: ${scalar(config.scoresOutput)}` : undefined,
    `scoresKind: ${config.scoresKind}`,
    config.preprocessing !== undefined ? `preprocessing: ${scalar(config.preprocessing)}` : undefined,
    `cache: ${scalar(config.cache)}`,
    `batching: ${scalar(config.batching)}`,
    `retry: ${scalar(config.retry)}`,
    `maxRowsPerRequest: ${config.maxRowsPerRequest}`,
  ];
  return `${lines.filter((l) => l !== undefined).join('\n')}\n`;
}
