/** `serverStats`, query and subscription: the operations view's figures, cut to what the caller may see. */
import { ServingError, isRedisUnavailable } from '../core/errors/registry.ts';
import type { DeploymentView, OpsStats } from '../core/operations/view.ts';
import type { DriftReport } from '../core/drift/monitor.ts';
import { mayPredict, type Principal } from '../core/api/authorization.ts';
import { toModelVersion, toRollout } from './mapping.ts';

/** What the API process gives these resolvers through the context. */
export interface OpsContext {
  stats: OpsStats;
  graphiql: boolean;
  authEnabled: boolean;
  /** Aborted when the API shuts down: live subscriptions end then. */
  closing: AbortSignal;
}

interface StatsArgs {
  windowSeconds?: number | null;
  historyMinutes?: number | null;
  intervalMs?: number | null;
}

interface Ctx {
  principal: Principal;
  ops?: OpsContext;
}

function intArg(name: string, value: number | null | undefined, fallback: number, min: number, max: number): number {
  if (value == null) return fallback;
  if (!Number.isInteger(value) || value < min || value > max)
    throw new ServingError('BAD_USER_INPUT', `${name}: expected an integer from ${min} to ${max}, got ${value}`, { field: name });
  return value;
}

const iso = (ms: number) => new Date(ms).toISOString();
const counts = (r: Record<string, number>) => Object.entries(r).map(([label, count]) => ({ label, count }));
const toDrift = (r: DriftReport) => ({
  ...r,
  checkedAt: iso(r.checkedAt),
  chiSquare: r.statistic,
  observed: counts(r.observed),
  expected: counts(r.expected),
});

async function serverStats(args: StatsArgs, ctx: Ctx) {
  const ops = ctx.ops;
  if (!ops) throw new ServingError('SERVICE_UNAVAILABLE', 'statistics are not available in this process');
  const windowSeconds = intArg('windowSeconds', args.windowSeconds, 10, 1, 60);
  const historySteps = (intArg('historyMinutes', args.historyMinutes, 5, 0, 15) * 60) / 5;
  const admin = ctx.principal.scopes.includes('admin');
  let view: DeploymentView;
  try {
    view = await ops.stats.view({ windowSeconds, historySteps, visible: (model) => admin || mayPredict(ctx.principal, model) });
  } catch (e) {
    if (isRedisUnavailable(e))
      throw new ServingError('SERVICE_UNAVAILABLE', 'the figures live in Redis, which is unreachable; try again later', { cause: e });
    throw e;
  }
  return toServerStats(view, ctx.principal, admin, ops);
}

function toServerStats(v: DeploymentView, principal: Principal, admin: boolean, ops: OpsContext) {
  return {
    at: iso(v.at),
    windowSeconds: v.windowSeconds,
    viewer: { name: principal.name, admin, authEnabled: ops.authEnabled },
    graphiql: ops.graphiql,
    processes: admin
      ? v.processes.map((p) => ({
          ...p,
          pool: p.pool ?? null,
          executionProvider: p.executionProvider ?? null,
          executionProviderNote: p.executionProviderNote ?? null,
          startedAt: iso(p.startedAt),
        }))
      : null,
    queues: v.queues,
    rejections: admin ? v.rejections : null,
    models: v.models.map((m) => ({
      ...m,
      versions: m.versions.map(toModelVersion),
      batchSizes: m.batchSizes.map((b) => ({ rows: Number.isFinite(b.rows) ? b.rows : null, count: b.count })),
      drift: m.drift ? toDrift(m.drift) : null,
      rollout: m.rollout ? toRollout(m.rollout) : null,
      history: m.history.map((p) => ({ ...p, at: iso(p.at) })),
    })),
  };
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

async function* liveStats(args: StatsArgs, ctx: Ctx): AsyncGenerator<{ serverStats: Awaited<ReturnType<typeof serverStats>> }> {
  const intervalMs = intArg('intervalMs', args.intervalMs, 1000, 500, 60_000);
  // Checked before the first figures, so bad arguments fail the subscription itself.
  const first = await serverStats(args, ctx);
  const closing = ctx.ops!.closing;
  yield { serverStats: first };
  for (;;) {
    await pause(intervalMs, closing);
    // As prediction subscriptions do at shutdown: the client resubscribes on another replica.
    if (closing.aborted) throw new ServingError('SERVICE_UNAVAILABLE', 'this API replica is shutting down; subscribe again');
    yield { serverStats: await serverStats(args, ctx) };
  }
}

export const opsStatsResolvers = {
  Query: {
    serverStats: (_: unknown, args: StatsArgs, ctx: Ctx) => serverStats(args, ctx),
  },
  Subscription: {
    serverStats: {
      subscribe: (_: unknown, args: StatsArgs, ctx: Ctx) => liveStats(args, ctx),
    },
  },
};
