/**
 * The import rules of docs/ARCHITECTURE.md, checked over every import between the project's
 * own files (type-only and dynamic imports included):
 *   - no cycle anywhere, between files or between rooms;
 *   - each room imports only the rooms its row in ROOMS allows.
 * A room is a folder of core/ (core/api, core/batching, ...) or a top-level folder (server,
 * workers, k8s, ...). `npm run check:imports` prints the verdict; `npm test` runs the same
 * check (test/unit/architecture/imports.test.ts).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Top-level folders whose files are checked. */
const SOURCES = ['core', 'server', 'resolvers', 'workers', 'cli', 'k8s', 'harness', 'bench', 'scripts', 'test', 'loadtests'];

/**
 * What each room may import (besides itself and packages). The product's rooms form layers:
 * a room imports only rooms below it, so no cycle can form. bench, scripts and test are
 * tools: they may import anything, and nothing of the product imports them.
 */
export const ROOMS: Record<string, readonly string[]> = {
  'core/errors': [],
  'core/preprocess': [],
  'core/redis': ['core/errors'],
  'core/config': ['core/redis'],
  'core/telemetry': ['core/config'],
  'core/lifecycle': ['core/config'],
  'core/models': ['core/config', 'core/preprocess', 'core/telemetry'],
  'core/tensor': ['core/errors', 'core/models'],
  'core/prediction': ['core/config', 'core/errors', 'core/models', 'core/preprocess', 'core/redis', 'core/tensor'],
  'core/runtime': ['core/errors', 'core/models', 'core/prediction', 'core/preprocess', 'core/tensor'],
  'core/drift': ['core/models', 'core/prediction', 'core/redis'],
  'core/batching': ['core/config', 'core/errors', 'core/models', 'core/prediction', 'core/runtime', 'core/tensor'],
  'core/control': ['core/config', 'core/drift', 'core/models', 'core/prediction', 'core/redis', 'core/telemetry'],
  'core/simulation': ['core/batching', 'core/models', 'core/prediction', 'core/runtime'],
  'core/worker': [
    'core/batching',
    'core/config',
    'core/drift',
    'core/errors',
    'core/models',
    'core/prediction',
    'core/redis',
    'core/runtime',
    'core/telemetry',
    'core/tensor',
  ],
  'core/rollout': [
    'core/control',
    'core/drift',
    'core/errors',
    'core/models',
    'core/prediction',
    'core/redis',
    'core/telemetry',
    'core/tensor',
  ],
  'core/api': [
    'core/batching',
    'core/config',
    'core/control',
    'core/drift',
    'core/errors',
    'core/models',
    'core/prediction',
    'core/redis',
    'core/rollout',
    'core/telemetry',
    'core/tensor',
  ],
  'core/operations': [
    'core/api',
    'core/config',
    'core/drift',
    'core/errors',
    'core/prediction',
    'core/redis',
    'core/rollout',
    'core/telemetry',
  ],
  resolvers: ['core'],
  server: ['core', 'resolvers'],
  workers: ['core'],
  k8s: ['core'],
  cli: ['core', 'server', 'workers', 'k8s'],
  harness: ['core', 'server', 'cli'],
  loadtests: [],
  bench: ['*'],
  scripts: ['*'],
  test: ['*'],
};

/** The room of a file: `core/<folder>` under core/, else its top-level folder. */
export function roomOf(file: string): string {
  const parts = file.split('/');
  return parts[0] === 'core' && parts.length > 2 ? `core/${parts[1]}` : parts[0];
}

function allows(from: string, to: string): boolean {
  const allowed = ROOMS[from] ?? [];
  return allowed.includes('*') || allowed.includes(to) || (to.startsWith('core/') && allowed.includes('core'));
}

function sourceFiles(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) sourceFiles(p, out);
    else if (/\.(ts|js|mjs)$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Every project file (repository-relative, `/`-separated) with the project files it imports. */
export function importGraph(root = ROOT): Map<string, string[]> {
  const files = SOURCES.flatMap((d) => {
    try {
      return sourceFiles(join(root, d));
    } catch {
      return [];
    }
  });
  const known = new Set(files.map((f) => relative(root, f).split(sep).join('/')));
  const graph = new Map<string, string[]>();
  for (const abs of files) {
    const file = relative(root, abs).split(sep).join('/');
    const { importedFiles } = ts.preProcessFile(readFileSync(abs, 'utf8'), true, true);
    const targets = new Set<string>();
    for (const { fileName } of importedFiles) {
      if (!fileName.startsWith('.')) continue;
      const target = relative(root, resolve(dirname(abs), fileName))
        .split(sep)
        .join('/');
      if (known.has(target)) targets.add(target);
    }
    graph.set(file, [...targets].sort());
  }
  return graph;
}

/** Each cycle as a path that returns to its start (one per strongly connected component). */
export function findCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(component);
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  // A path through each component, for the message: breadth-first from its first member back to it.
  return components.map((component) => {
    const members = new Set(component);
    const start = [...members].sort()[0];
    const previous = new Map<string, string>();
    const queue = [start];
    while (queue.length) {
      const v = queue.shift()!;
      for (const w of graph.get(v) ?? []) {
        if (!members.has(w)) continue;
        if (w === start) {
          const path = [start];
          for (let at = v; at !== start; at = previous.get(at)!) path.splice(1, 0, at);
          return [...path, start];
        }
        if (!previous.has(w)) {
          previous.set(w, v);
          queue.push(w);
        }
      }
    }
    return [...component, component[0]];
  });
}

/** The rooms' own graph: an edge wherever a file of one imports a file of another. */
export function roomGraph(graph: ReadonlyMap<string, readonly string[]>): Map<string, string[]> {
  const rooms = new Map<string, Set<string>>();
  for (const [file, targets] of graph) {
    const from = roomOf(file);
    if (!rooms.has(from)) rooms.set(from, new Set());
    for (const t of targets) if (roomOf(t) !== from) rooms.get(from)!.add(roomOf(t));
  }
  return new Map([...rooms].map(([r, ts]) => [r, [...ts].sort()]));
}

/** Imports a room's row does not allow: `file -> target (from room may not import to room)`. */
export function ruleBreaks(graph: ReadonlyMap<string, readonly string[]>): string[] {
  const out: string[] = [];
  for (const [file, targets] of graph) {
    const from = roomOf(file);
    if (!(from in ROOMS)) {
      out.push(`${file}: room '${from}' has no row in ROOMS (scripts/check-imports.ts) or docs/ARCHITECTURE.md`);
      continue;
    }
    for (const t of targets) {
      const to = roomOf(t);
      if (to !== from && !allows(from, to)) out.push(`${file} -> ${t} (${from} may not import ${to})`);
    }
  }
  return out;
}

if (import.meta.main) {
  const graph = importGraph();
  const fileCycles = findCycles(graph);
  const roomCycles = findCycles(roomGraph(graph));
  const breaks = ruleBreaks(graph);
  const edges = [...graph.values()].reduce((n, t) => n + t.length, 0);
  console.log(`${graph.size} files, ${edges} imports between them, ${roomGraph(graph).size} rooms`);
  for (const c of fileCycles) console.log(`file cycle: ${c.join(' -> ')}`);
  for (const c of roomCycles) console.log(`room cycle: ${c.join(' -> ')}`);
  for (const b of breaks) console.log(`not allowed: ${b}`);
  const bad = fileCycles.length + roomCycles.length + breaks.length;
  console.log(bad ? `${bad} problem(s)` : 'no import cycles; every room imports only what docs/ARCHITECTURE.md allows');
  process.exitCode = bad ? 1 : 0;
}
