/**
 * GraphQL resolvers: thin adapters from arguments to calls of core/api (catalog, predictor, tickets) and from
 * records to schema types. Errors are ServingErrors; server/errors.ts gives them their
 * `extensions.code` and HTTP status.
 */
import type { PredictionInput } from '../core/prediction/input.ts';
import { decodeOutput, type EncodedTensor } from '../core/tensor/codec.ts';
import type { PredictionRecord } from '../core/prediction/record.ts';
import { toEvent, toModelVersion, toPrediction, toStatusReport } from './mapping.ts';
import { authorize, mayPredict } from '../core/api/authorization.ts';
import type { RequestContext } from './context.ts';
import { operationResolvers } from './operations.ts';
import { opsStatsResolvers } from './ops-stats.ts';
import { rolloutResolvers } from './rollout.ts';

export type { RequestContext } from './context.ts';

interface PredictArgs {
  model: string;
  version?: string | null;
  input: PredictionInput;
  timeoutMs?: number | null;
  routeKey?: string | null;
}

/** What a request to run a model carries besides its arguments: its id, its route key (argument first, then header), its trace. */
const requestOf = (args: PredictArgs, ctx: RequestContext) => ({
  requestId: ctx.requestId,
  routeKey: args.routeKey || ctx.routeKey,
  traceId: ctx.traceId,
});

const coreResolvers = {
  Query: {
    async models(_: unknown, __: unknown, ctx: RequestContext) {
      return (await ctx.catalog.models()).map(toModelVersion);
    },
    async model(_: unknown, args: { name: string }, ctx: RequestContext) {
      const versions = (await ctx.catalog.models()).filter((m) => m.name === args.name).map(toModelVersion);
      return versions.length ? { name: args.name, versions } : null;
    },
    async predict(_: unknown, args: PredictArgs, ctx: RequestContext) {
      authorize(ctx, { model: args.model });
      return toPrediction(await ctx.predictor.predict({ ...args, ...requestOf(args, ctx) }));
    },
    async prediction(_: unknown, args: { id: string }, ctx: RequestContext) {
      const record = await ctx.tickets.get(args.id);
      authorize(ctx, { model: record.model });
      return toStatusReport(record);
    },
  },
  Mutation: {
    async submitPrediction(_: unknown, args: PredictArgs & { priority?: number | null }, ctx: RequestContext) {
      authorize(ctx, { model: args.model });
      const ticket = await ctx.tickets.submit({ ...args, ...requestOf(args, ctx) });
      return { ...ticket, submittedAt: new Date(ticket.submittedAt).toISOString() };
    },
  },
  Subscription: {
    predictionResult: {
      subscribe: async (_: unknown, args: { id: string }, ctx: RequestContext) => {
        // A key limited to some models reads the record first to learn the prediction's model.
        if (!mayPredict(ctx.principal)) authorize(ctx, { model: (await ctx.tickets.get(args.id)).model });
        return ctx.tickets.watch(args.id);
      },
      resolve: (record: PredictionRecord) => toEvent(record),
    },
  },
};

/** Every resolver, by type. */
export const resolvers = {
  Query: { ...coreResolvers.Query, ...operationResolvers.Query, ...opsStatsResolvers.Query, ...rolloutResolvers.Query },
  Mutation: { ...coreResolvers.Mutation, ...operationResolvers.Mutation, ...rolloutResolvers.Mutation },
  Subscription: { ...coreResolvers.Subscription, ...opsStatsResolvers.Subscription },
  // Outputs travel and are stored as bytes; numbers are made only for a client that asks for `data`.
  Tensor: {
    base64: (t: EncodedTensor) => t.base64,
    data: (t: EncodedTensor) => decodeOutput(t),
  },
};
