/**
 * A Redis Cluster on loopback, of the redis-server on PATH: `masters` masters with `replicas`
 * replicas each, `--cluster-enabled yes`, joined by `redis-cli --cluster create`, each node on a
 * free port whose cluster bus port (port + 10000) is free too, its data in a folder under the
 * OS's temp folder that `stop()` removes. For the tests (test/support/cluster.ts) and the
 * benchmark (bench/cluster.ts); production runs a cluster of its own (k8s/README.md).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort, portFree, redisServerArgs } from '../cli/local-redis.ts';

export interface ClusterNode {
  port: number;
  /** The redis-server's process id while it runs. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Kills the server (SIGKILL by default: a crash, nothing written on the way out) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Sends a signal without waiting (SIGSTOP freezes the server, SIGCONT thaws it). */
  signal(signal: NodeJS.Signals): void;
}

export interface NodeInfo {
  id: string;
  port: number;
  role: 'master' | 'replica';
  /** The master's id, for a replica. */
  masterId?: string;
  failed: boolean;
  /** Slot ranges served, for a master. */
  slots: [number, number][];
}

export interface LocalCluster {
  nodes: ClusterNode[];
  /** `redis+cluster://127.0.0.1:P1,...`: the value of `redis.cluster` (BATCHLINE_REDIS_CLUSTER). */
  seeds: string;
  /** The cluster as node `via` (the first running node by default) sees it now. */
  topology(via?: number): Promise<NodeInfo[]>;
  /** The slot of a key (CLUSTER KEYSLOT). */
  slotOf(key: string): Promise<number>;
  /** The master that serves `slot` now. */
  masterOf(slot: number): Promise<NodeInfo>;
  /** Moves `slots` to the master on `toPort`, key by key, as `redis-cli --cluster reshard` does. */
  moveSlots(slots: number[], toPort: number): Promise<{ keysMoved: number }>;
  /** Resolves once every slot is served by a running master and the cluster says ok, or throws after `timeoutMs`. */
  healthy(timeoutMs?: number): Promise<void>;
  /** Kills every node and removes the data folder. */
  stop(): Promise<void>;
}

/** `count` ports on 127.0.0.1 that are free now, each with its cluster bus port (+10000) free too. */
async function clusterPorts(count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let tries = 0; ports.length < count; tries++) {
    if (tries > 200) throw new Error('no free port pairs (port and port + 10000) on 127.0.0.1');
    const p = await freePort();
    if (p + 10000 > 65535 || ports.includes(p) || ports.includes(p + 10000) || ports.includes(p - 10000)) continue;
    if (await portFree(p + 10000)) ports.push(p);
  }
  return ports;
}

function connect(port: number): Redis {
  const r = new Redis(port, '127.0.0.1', { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  return r;
}

async function withNode<T>(port: number, op: (r: Redis) => Promise<T>): Promise<T> {
  const r = connect(port);
  try {
    await r.connect();
    return await op(r);
  } finally {
    r.disconnect();
  }
}

async function until(what: string, timeoutMs: number, cond: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`local cluster: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Parses CLUSTER NODES. */
export function parseClusterNodes(text: string): NodeInfo[] {
  return text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, addr, flags, master, , , , , ...slots] = line.split(' ');
      const port = Number(/:(\d+)@/.exec(addr)?.[1]);
      const f = flags.split(',');
      return {
        id,
        port,
        role: f.includes('master') ? 'master' : 'replica',
        ...(master !== '-' ? { masterId: master } : {}),
        failed: f.includes('fail') || f.includes('fail?'),
        slots: slots
          .filter((s) => !s.startsWith('['))
          .map((s) => {
            const [a, b] = s.split('-').map(Number);
            return [a, b ?? a] as [number, number];
          }),
      };
    });
}

export async function startLocalCluster(o: { masters?: number; replicas?: number; nodeTimeoutMs?: number } = {}): Promise<LocalCluster> {
  const masters = o.masters ?? 3;
  const replicas = o.replicas ?? 1;
  const nodeTimeoutMs = o.nodeTimeoutMs ?? 2000;
  const dir = mkdtempSync(join(tmpdir(), 'batchline-cluster-'));
  const ports = await clusterPorts(masters * (1 + replicas));
  const procs = new Map<number, ChildProcess>();
  const exited = new Map<number, Promise<void>>();
  // A test process that dies without its hooks still takes its servers with it.
  const killAll = (): void => {
    for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  };
  process.once('exit', killAll);
  const stop = async (): Promise<void> => {
    process.off('exit', killAll);
    killAll();
    await Promise.all(exited.values());
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const port of ports) {
      const nodeDir = join(dir, String(port));
      mkdirSync(nodeDir);
      const args = redisServerArgs({ port, dir: nodeDir, appendonly: false }, [
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        'nodes.conf',
        '--cluster-node-timeout',
        String(nodeTimeoutMs),
      ]);
      const proc = spawn('redis-server', args, { stdio: 'ignore' });
      procs.set(port, proc);
      exited.set(port, new Promise<void>((done) => proc.once('exit', () => done())));
    }
    await Promise.all(ports.map((p) => until(`redis-server on ${p}`, 10_000, () => withNode(p, async (r) => (await r.ping()) === 'PONG'))));
    const create = spawnSync(
      'redis-cli',
      ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(replicas), '--cluster-yes'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed (${create.status}):\n${create.stdout}\n${create.stderr}`);
  } catch (e) {
    await stop();
    throw e;
  }

  const nodes: ClusterNode[] = ports.map((port) => ({
    port,
    get pid() {
      return procs.get(port)?.pid;
    },
    get running() {
      const p = procs.get(port)!;
      return p.exitCode === null && p.signalCode === null;
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      const p = procs.get(port)!;
      if (p.exitCode === null && p.signalCode === null) p.kill(signal);
      await exited.get(port);
    },
    signal(signal: NodeJS.Signals) {
      const p = procs.get(port)!;
      if (p.exitCode === null && p.signalCode === null) p.kill(signal);
    },
  }));
  const running = (): number[] => nodes.filter((n) => n.running).map((n) => n.port);
  const topology = (via = running()[0]): Promise<NodeInfo[]> =>
    withNode(via, async (r) => parseClusterNodes((await r.call('CLUSTER', 'NODES')) as string));
  const masterOf = async (slot: number): Promise<NodeInfo> => {
    const m = (await topology()).find((n) => n.role === 'master' && !n.failed && n.slots.some(([a, b]) => slot >= a && slot <= b));
    if (!m) throw new Error(`no master serves slot ${slot}`);
    return m;
  };
  const healthy = (timeoutMs = 30_000): Promise<void> =>
    until('a healthy cluster', timeoutMs, async () => {
      for (const port of running()) {
        const ok = await withNode(port, async (r) => {
          const info = (await r.call('CLUSTER', 'INFO')) as string;
          if (!/cluster_state:ok/.test(info) || !/cluster_slots_assigned:16384/.test(info) || !/cluster_slots_ok:16384/.test(info))
            return false;
          // No running node is marked failed, and every replica's link is up, so a failover is possible.
          const nodesNow = parseClusterNodes((await r.call('CLUSTER', 'NODES')) as string);
          if (nodesNow.some((n) => n.failed && running().includes(n.port))) return false;
          const me = nodesNow.find((n) => n.port === port);
          if (me?.role === 'replica') return /master_link_status:up/.test(await r.info('replication'));
          // CLUSTER SLOTS, which clients route by, lists a replica once its offset has gossiped around.
          const slots = (await r.call('CLUSTER', 'SLOTS')) as unknown[][];
          return slots.every((range) => range.length - 3 >= replicas);
        });
        if (!ok) return false;
      }
      return true;
    });
  const cluster: LocalCluster = {
    nodes,
    seeds: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`,
    topology,
    slotOf: (key) => withNode(running()[0], async (r) => Number(await r.call('CLUSTER', 'KEYSLOT', key))),
    masterOf,
    healthy,
    async moveSlots(slots, toPort) {
      let keysMoved = 0;
      const all = await topology();
      const target = all.find((n) => n.port === toPort && n.role === 'master');
      if (!target) throw new Error(`no master on port ${toPort}`);
      for (const slot of slots) {
        const source = await masterOf(slot);
        if (source.id === target.id) continue;
        // The documented protocol (redis-cli --cluster reshard does the same): the target
        // imports, the source migrates; keys move in batches; then every master learns the owner.
        await withNode(target.port, (r) => r.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', source.id));
        await withNode(source.port, (r) => r.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', target.id));
        await withNode(source.port, async (r) => {
          for (;;) {
            const keys = (await r.call('CLUSTER', 'GETKEYSINSLOT', slot, 100)) as string[];
            if (keys.length === 0) break;
            await r.call('MIGRATE', '127.0.0.1', target.port, '', 0, 5000, 'REPLACE', 'KEYS', ...keys);
            keysMoved += keys.length;
          }
        });
        for (const n of all.filter((m) => m.role === 'master' && nodes.find((x) => x.port === m.port)?.running)) {
          await withNode(n.port, (r) => r.call('CLUSTER', 'SETSLOT', slot, 'NODE', target.id));
        }
      }
      return { keysMoved };
    },
    stop,
  };
  try {
    await healthy();
  } catch (e) {
    await stop();
    throw e;
  }
  return cluster;
}
