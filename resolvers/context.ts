/** What every resolver is given: the API's serving parts, the request's id and who is asking. */
import type { ModelCatalog } from '../core/api/catalog.ts';
import type { Predictor } from '../core/api/predictor.ts';
import type { Tickets } from '../core/api/tickets.ts';
import type { Principal } from '../core/api/authorization.ts';
import type { Maintenance } from '../core/control/maintenance.ts';
import type { OpsContext } from './ops-stats.ts';
import type { Rollout } from '../core/rollout/rollout.ts';

export interface RequestContext {
  catalog: ModelCatalog;
  predictor: Predictor;
  tickets: Tickets;
  requestId: string;
  /** Who is asking (server/auth.ts); all-access and anonymous when auth is off. */
  principal: Principal;
  /** The periodic jobs, when this process runs them (admin operations use it). */
  maintenance?: Maintenance;
  /** The operations view's figures (resolvers/ops-stats.ts). */
  ops?: OpsContext;
  /** Traffic policies and captured payloads (resolvers/rollout.ts). */
  rollout?: Rollout;
  /** The `x-batchline-route-key` header: a request without its own `routeKey` argument uses it. */
  routeKey?: string;
  /** The W3C trace id of the request's `traceparent`, kept with a captured payload. */
  traceId?: string;
}
