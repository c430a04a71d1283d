/**
 * The `k8s` and `model measure` commands of the batchline CLI:
 *
 *   batchline k8s render <file> [--out dir]      manifests to stdout, or one file each under dir
 *   batchline k8s explain <file>                 how each pool's worker count was decided (and, for a
 *                                                pool with autoscaling.expectedRate, the replicas it needs)
 *   batchline model measure <model> [--models dir] [--overrides file] [--version v] [--json]
 *
 * Modules load lazily: the renderer needs ajv (a development dependency), which the
 * production image leaves out, and `serve`/`worker` should not pay for any of this.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const USAGE = `usage:
  batchline k8s render <file> [--out dir]
  batchline k8s explain <file>
  batchline model measure <model> [--models dir] [--overrides file] [--version v] [--json]
`;

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}
const stdio: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

function options(args: string[]): { positional: string[]; flags: Map<string, string | true> } {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('--')) {
      positional.push(a);
      continue;
    }
    const [key, inline] = a.slice(2).split('=', 2);
    if (inline !== undefined) flags.set(key, inline);
    else if (key === 'json') flags.set(key, true);
    else if (i + 1 < args.length) flags.set(key, args[++i]);
    else throw new Error(`--${key} needs a value`);
  }
  return { positional, flags };
}

async function k8s(sub: string | undefined, positional: string[], flags: Map<string, string | true>, io: Io): Promise<number> {
  const file = positional[0];
  if ((sub !== 'render' && sub !== 'explain') || !file) {
    io.err(USAGE);
    return 2;
  }
  const { loadModelServer } = await import('./load.ts');
  const loaded = loadModelServer(file);
  if (loaded.pools.some((p) => p.spec.autoscaling.expectedRate)) {
    const { suggestReplicas, suggestionText } = await import('./capacity.ts');
    loaded.suggestions = await suggestReplicas(loaded, dirname(file));
    if (sub === 'render') {
      for (const p of loaded.pools) {
        const s = loaded.suggestions[p.pool];
        if (s && s.plan.replicas > p.spec.autoscaling.maxReplicas)
          io.err(`warning: pool ${p.pool}: ${suggestionText(s, p.spec.autoscaling.maxReplicas)}\n`);
      }
    }
  }
  if (sub === 'explain') {
    const { explain } = await import('./explain.ts');
    io.out(explain(loaded));
    return 0;
  }
  const { renderManifests, toYaml, manifestYaml, manifestFileName } = await import('./render.ts');
  const manifests = renderManifests(loaded);
  const out = flags.get('out');
  if (typeof out !== 'string') {
    io.out(toYaml(manifests));
    return 0;
  }
  mkdirSync(out, { recursive: true });
  manifests.forEach((m, i) => writeFileSync(join(out, manifestFileName(m, i)), manifestYaml(m)));
  io.err(`wrote ${manifests.length} manifests to ${out}\n`);
  return 0;
}

async function measure(positional: string[], flags: Map<string, string | true>, io: Io): Promise<number> {
  const model = positional[0];
  if (!model) {
    io.err(USAGE);
    return 2;
  }
  const { measureModel } = await import('./measure.ts');
  const { ceilMi } = await import('./quantity.ts');
  const { mib } = await import('../core/worker/sizing.ts');
  // The repository and its overrides as the server finds them (config file, environment), unless given.
  const { loadConfig } = await import('../core/config/settings.ts');
  const { models } = loadConfig();
  const dir = flags.get('models');
  const overrides = flags.get('overrides');
  const version = flags.get('version');
  const m = await measureModel(
    typeof dir === 'string' ? dir : models.repository,
    model,
    typeof version === 'string' ? version : undefined,
    {
      overridesFile: typeof overrides === 'string' ? overrides : models.overrides || undefined,
    },
  );
  if (flags.get('json')) {
    io.out(JSON.stringify({ ...m, memory: ceilMi(m.residentBytes) }) + '\n');
    return 0;
  }
  io.out(
    `${m.model} version ${m.version}: ${mib(m.residentBytes)} resident after warm-up (batches ${m.batchSizes.join(' and ')}), ` +
      `peak ${mib(m.peakBytes)}, loaded in ${m.loadMs} ms\n` +
      `record in the ModelServer:  - { name: ${m.model}, memory: ${ceilMi(m.residentBytes)} }\n`,
  );
  return 0;
}

/**
 * Runs `k8s render|explain` or `model measure`; `argv` starts at the command
 * (`['k8s', 'render', 'file.yaml']`). Errors are printed, not thrown.
 * @returns the process exit code: 0 done, 1 failed (an invalid resource), 2 usage
 */
export async function runK8sCli(argv: string[], io: Io = stdio): Promise<number> {
  const [command, sub, ...rest] = argv;
  try {
    if (command === 'k8s') {
      const { positional, flags } = options(rest);
      return await k8s(sub, positional, flags, io);
    }
    if (command === 'model' && sub === 'measure') {
      const { positional, flags } = options(rest);
      return await measure(positional, flags, io);
    }
    io.err(USAGE);
    return 2;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.name === 'ModelServerError') io.err(`invalid ModelServer ${argv[2] ?? ''}:\n${err.message}\n`);
    // The production image leaves out development dependencies (ajv, which checks the CRD schema).
    else if (err.code === 'ERR_MODULE_NOT_FOUND')
      io.err(`${err.message}\n'batchline k8s' needs the development dependencies: run it from a checkout after npm ci\n`);
    else io.err(`${err.message}\n`);
    return 1;
  }
}
