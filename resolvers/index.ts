/**
 * GraphQL resolvers: thin adapters from arguments to PredictionService calls and from
 * records to schema types. Errors are ServingErrors; server/errors.ts gives them their
 * `extensions.code` and HTTP status.
 */
import type { PredictionService } from '../core/prediction-service.ts';
import type { PredictionInput } from '../core/input.ts';
import type { PredictionRecord } from '../core/prediction.ts';
import { toEvent, toModelVersion, toPrediction, toStatusReport } from './mapping.ts';

export interface RequestContext {
  service: PredictionService;
  requestId: string;
}

interface PredictArgs {
  model: string;
  version?: string | null;
  input: PredictionInput;
  timeoutMs?: number | null;
}

export const resolvers = {
  Query: {
    async models(_: unknown, __: unknown, ctx: RequestContext) {
      return (await ctx.service.models()).map(toModelVersion);
    },
    async model(_: unknown, args: { name: string }, ctx: RequestContext) {
      const versions = (await ctx.service.models()).filter((m) => m.name === args.name).map(toModelVersion);
      return versions.length ? { name: args.name, versions } : null;
    },
    async predict(_: unknown, args: PredictArgs, ctx: RequestContext) {
      return toPrediction(await ctx.service.predict({ ...args, requestId: ctx.requestId }));
    },
    async prediction(_: unknown, args: { id: string }, ctx: RequestContext) {
      return toStatusReport(await ctx.service.get(args.id));
    },
  },
  Mutation: {
    async submitPrediction(_: unknown, args: PredictArgs & { priority?: number | null }, ctx: RequestContext) {
      const ticket = await ctx.service.submit({ ...args, requestId: ctx.requestId });
      return { ...ticket, submittedAt: new Date(ticket.submittedAt).toISOString() };
    },
  },
  Subscription: {
    predictionResult: {
      subscribe: (_: unknown, args: { id: string }, ctx: RequestContext) => ctx.service.watch(args.id),
      resolve: (record: PredictionRecord) => toEvent(record),
    },
  },
};
