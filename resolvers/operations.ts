/** Resolvers for operating on predictions and models: cancellation, reloads, maintenance, drift. */
import { ServingError } from '../core/errors/registry.ts';
import type { MaintenanceTask } from '../core/control/maintenance.ts';
import { authorize } from '../core/api/authorization.ts';
import type { RequestContext } from './context.ts';
import { toModelVersion, toStatusReport } from './mapping.ts';

const TASKS: readonly MaintenanceTask[] = ['poll-models', 'housekeeping', 'drift-monitor', 'rollout-gates'];
const counts = (r: Record<string, number>) => Object.entries(r).map(([label, count]) => ({ label, count }));

export const operationResolvers = {
  Query: {
    async modelDrift(_: unknown, args: { model: string; version?: string | null }, ctx: RequestContext) {
      authorize(ctx, { model: args.model });
      const r = await ctx.catalog.drift(args.model, args.version);
      if (!r) return null;
      return {
        ...r,
        checkedAt: new Date(r.checkedAt).toISOString(),
        chiSquare: r.statistic,
        observed: counts(r.observed),
        expected: counts(r.expected),
      };
    },
  },
  Mutation: {
    async cancelPrediction(_: unknown, args: { id: string }, ctx: RequestContext) {
      authorize(ctx, { model: (await ctx.tickets.get(args.id)).model });
      return toStatusReport(await ctx.tickets.cancel(args.id, ctx.requestId));
    },
    async reloadModels(_: unknown, __: unknown, ctx: RequestContext) {
      authorize(ctx, { admin: true });
      await ctx.maintenance?.pollModels();
      await ctx.catalog.reload();
      return (await ctx.catalog.models()).map(toModelVersion);
    },
    async runMaintenance(_: unknown, args: { task: string }, ctx: RequestContext) {
      authorize(ctx, { admin: true });
      if (!TASKS.includes(args.task as MaintenanceTask))
        throw new ServingError('BAD_USER_INPUT', `task: expected one of ${TASKS.join(', ')}, got '${args.task}'`, { field: 'task' });
      if (!ctx.maintenance) throw new ServingError('SERVICE_UNAVAILABLE', 'maintenance is not running in this process');
      return JSON.stringify(await ctx.maintenance.run(args.task as MaintenanceTask));
    },
  },
};
