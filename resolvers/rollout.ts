/** Resolvers for rolling out versions: a model's policy and figures, its changes (admin), its captured payloads (admin). */
import { ServingError, asServingError, badInput } from '../core/errors/registry.ts';
import { authorize } from '../core/api/authorization.ts';
import type { RolloutChange } from '../core/rollout/rollout.ts';
import { toCloudEvent } from '../core/rollout/capture.ts';
import type { RequestContext } from './context.ts';
import { toRollout } from './mapping.ts';

function rolloutOf(ctx: RequestContext) {
  if (!ctx.rollout) throw new ServingError('SERVICE_UNAVAILABLE', 'rollouts are not available in this process');
  return ctx.rollout;
}

async function report(ctx: RequestContext, model: string) {
  try {
    const r = await rolloutOf(ctx).report(model);
    if (!r) throw new ServingError('MODEL_NOT_FOUND', `no model named '${model}'`);
    return toRollout(r);
  } catch (e) {
    throw asServingError(e);
  }
}

/** `since` as epoch ms: an ISO time or a number of ms. */
function sinceArg(since: string | null | undefined): number | undefined {
  if (since == null || since === '') return undefined;
  const ms = /^\d+$/.test(since) ? Number(since) : Date.parse(since);
  if (!Number.isFinite(ms)) throw badInput('since', `since: expected an ISO time or epoch milliseconds, got '${since}'`);
  return ms;
}

export const rolloutResolvers = {
  Query: {
    async rollout(_: unknown, args: { model: string }, ctx: RequestContext) {
      authorize(ctx, { model: args.model });
      return report(ctx, args.model);
    },
    async capturedPayloads(
      _: unknown,
      args: { model: string; since?: string | null; after?: string | null; limit?: number | null },
      ctx: RequestContext,
    ) {
      authorize(ctx, { admin: true });
      const limit = args.limit ?? 100;
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw badInput('limit', `limit: expected 1 to 1000, got ${limit}`);
      if (args.after != null && !/^\d+-\d+$/.test(args.after))
        throw badInput('after', `after: expected a stream entry id, got '${args.after}'`);
      if (!ctx.catalog.repository.has(args.model)) throw new ServingError('MODEL_NOT_FOUND', `no model named '${args.model}'`);
      const since = sinceArg(args.since);
      try {
        const page = await rolloutOf(ctx).captures(args.model, { since, after: args.after ?? undefined, count: limit });
        return {
          payloads: page.entries.map((e) => ({
            id: e.id,
            time: new Date(e.at).toISOString(),
            model: e.model,
            version: e.version,
            route: e.route,
            requestId: e.requestId,
            traceId: e.traceId ?? null,
            event: JSON.stringify(toCloudEvent(e)),
          })),
          next: page.next ?? null,
        };
      } catch (e) {
        throw asServingError(e);
      }
    },
  },
  Mutation: {
    async setRollout(_: unknown, args: { model: string; policy: RolloutChange }, ctx: RequestContext) {
      authorize(ctx, { admin: true });
      await rolloutOf(ctx).set(args.model, args.policy, ctx.principal.name);
      return report(ctx, args.model);
    },
    async promote(_: unknown, args: { model: string; version?: string | null }, ctx: RequestContext) {
      authorize(ctx, { admin: true });
      await rolloutOf(ctx).promote(args.model, args.version, ctx.principal.name);
      return report(ctx, args.model);
    },
    async rollback(_: unknown, args: { model: string; reason?: string | null }, ctx: RequestContext) {
      authorize(ctx, { admin: true });
      await rolloutOf(ctx).rollback(args.model, { by: ctx.principal.name, reason: args.reason ?? undefined });
      return report(ctx, args.model);
    },
    async setCapture(_: unknown, args: { model: string; capture: Record<string, unknown> }, ctx: RequestContext) {
      authorize(ctx, { admin: true });
      await rolloutOf(ctx).setCapture(args.model, args.capture, ctx.principal.name);
      return report(ctx, args.model);
    },
    async resetRollout(_: unknown, args: { model: string }, ctx: RequestContext) {
      authorize(ctx, { admin: true });
      await rolloutOf(ctx).policies.reset(args.model, ctx.principal.name);
      return report(ctx, args.model);
    },
  },
};
