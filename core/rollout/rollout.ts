/**
 * The rollout, API side: what happens around each synchronous answer under a model's traffic
 * policy, and the admin operations on the policy.
 *
 * Around an answer (`observe`, called by the predictor once the client's answer is decided,
 * never awaited): the request counts toward its version pair (the stable's or the canary's
 * side); a sampled request is run again on a second version (the shadow, or the stable for a
 * canary request) after the answer and apart from it, and the two answers are compared; a
 * sampled request is captured. Nothing here can change, delay or fail the client's answer.
 *
 * Mirrored work is the first to go under load: it runs at BullMQ's lowest priority, behind
 * every real job, with its own deadline (`shadow.timeoutMs`), and is refused once the pool has
 * `shadow.maxQueueDepth` jobs waiting, long before `queue.maxDepth` refuses real work; each
 * process also keeps at most MIRRORS_IN_FLIGHT runs out. What is refused, late or unservable
 * is counted as shed, what fails as the candidate's failure; neither reaches the client.
 */
import { ServingError, asServingError, badInput } from '../errors/registry.ts';
import type { Keyspace, RedisClient } from '../redis/connection.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { ModelRepository, ModelVersion } from '../models/repository.ts';
import type { NormalizedInput } from '../prediction/input.ts';
import { modelKey, type PredictionResult } from '../prediction/record.ts';
import { readDriftReport } from '../drift/monitor.ts';
import type { Registry } from 'prom-client';
import { compareResults } from './compare.ts';
import { ComparisonRecorder, readComparison, type ComparisonReport, type Pair, type ShedReason } from './comparisons.ts';
import { judgeCanary, type GateVerdict } from './gates.ts';
import { createRolloutMetrics, type RolloutMetrics } from './metrics.ts';
import { PayloadCapture, readCaptures, type CaptureEntry } from './capture.ts';
import { TrafficPolicies } from './policies.ts';
import {
  ROLLOUT_DEFAULTS,
  checkRollout,
  parseCanary,
  parseCapture,
  parseGates,
  parseShadow,
  sinceMs,
  type Fail,
  type RolloutSpec,
  type TrafficPolicy,
} from '../models/rollout-policy.ts';
import type { MirrorKind, RouteKind } from './router.ts';

/** Mirrored runs one API process keeps out at once; more are shed (`busy`). */
export const MIRRORS_IN_FLIGHT = 64;

/** How a request was routed: the version that answers, and a run for comparison when one was sampled. */
export interface Route {
  mv: ModelVersion;
  route: RouteKind;
  /** The stable version when the request was routed (undefined for a named version). */
  stable?: string;
  mirror?: { mv: ModelVersion; kind: MirrorKind };
  policy?: TrafficPolicy;
}

/** Runs an input on a version as mirrored work (the predictor's; see the header for how it is held back). */
export type MirrorRunner = (
  mv: ModelVersion,
  input: NormalizedInput,
  rows: number,
  o: { timeoutMs: number; maxQueueDepth: number; requestId: string },
) => Promise<PredictionResult>;

/** A synchronous request's outcome, as the predictor saw it. */
export interface Outcome {
  route: Route;
  requestId: string;
  traceId?: string;
  input?: NormalizedInput;
  rows?: number;
  result?: PredictionResult;
  error?: ServingError;
  totalMs: number;
}

/** A model's policy with the figures of its version pairs, for the `rollout` query, the view and the gates. */
export interface RolloutReport {
  policy: TrafficPolicy;
  /** The stable version now (the policy's, or the newest ready one), or null when it cannot serve. */
  stable: string | null;
  comparisons: ComparisonReport[];
}

/** An error that is the version's fault (counted in its error rate); the client's own mistakes are not. */
export function versionFault(e: ServingError): boolean {
  return e.status >= 500 || e.code === 'NON_FINITE_OUTPUT';
}

/** Mirrored work dropped for load or shutdown, not for the candidate's fault. */
function shedReason(e: ServingError, stopping: boolean): ShedReason | undefined {
  if (stopping) return 'shutdown';
  if (e.code === 'QUEUE_FULL') return 'queue';
  if (e.code === 'DEADLINE_EXCEEDED') return 'deadline';
  if (e.code === 'SERVICE_UNAVAILABLE') return 'unavailable';
  return undefined;
}

/** The stable version of a model under its policy: the pinned one, or the newest ready; undefined when that cannot serve. */
export function stableVersionOf(repository: ModelRepository, model: string, policy: TrafficPolicy | undefined): ModelVersion | undefined {
  const mv = repository.find(model, policy?.rollout.stable);
  return mv?.status === 'READY' ? mv : undefined;
}

export function canaryPair(policy: TrafficPolicy, stable: string): Pair | undefined {
  const c = policy.rollout.canary;
  return c && { model: policy.model, kind: 'canary', stable, candidate: c.version, since: policy.canarySince ?? '0' };
}

export function shadowPair(policy: TrafficPolicy, stable: string): Pair | undefined {
  const s = policy.rollout.shadow;
  return s && { model: policy.model, kind: 'shadow', stable, candidate: s.version, since: policy.shadowSince ?? '0' };
}

/** A change of a model's rollout, as the `setRollout` mutation takes it: a field left out stays, null clears it. */
export interface RolloutChange {
  stable?: string | null;
  canary?: unknown;
  shadow?: unknown;
  gates?: unknown;
}

export interface RolloutDeps {
  redis: RedisClient;
  keys: Keyspace;
  logger: Logger;
  registry: Registry;
  /** The repository this process serves now. */
  repository: () => ModelRepository;
}

export class Rollout {
  readonly policies: TrafficPolicies;
  readonly metrics: RolloutMetrics;
  private readonly deps: RolloutDeps;
  private readonly recorder: ComparisonRecorder;
  private readonly capture: PayloadCapture;
  private run?: MirrorRunner;
  private inFlight = 0;
  private stopping = false;

  constructor(deps: RolloutDeps) {
    this.deps = deps;
    this.policies = new TrafficPolicies(deps);
    this.metrics = createRolloutMetrics(deps.registry);
    this.recorder = new ComparisonRecorder(deps.redis, deps.keys);
    this.capture = new PayloadCapture({ redis: deps.redis, keys: deps.keys, metrics: this.metrics });
  }

  /** Starts writing comparison figures; `run` is how mirrored work is sent. (Read the live policies with `policies.refresh`.) */
  start(run: MirrorRunner): void {
    this.run = run;
    this.recorder.start();
  }

  /** Counts a routed request (sync or async) by the version it went to. */
  routed(route: Route): void {
    this.metrics.routed.inc({ model: route.mv.name, version: route.mv.version, route: route.route });
  }

  /** See the header. Returns at once; never throws (a fault here must not turn an answer into an error). */
  observe(o: Outcome): void {
    try {
      this.observed(o);
    } catch (e) {
      this.deps.logger.error({ err: (e as Error).message, model: o.route.mv.name }, 'rollout bookkeeping failed');
    }
  }

  private observed(o: Outcome): void {
    const { route } = o;
    const policy = route.policy;
    if (!policy || (o.error && !versionFault(o.error))) return;
    if (route.route !== 'named' && route.stable !== undefined) {
      const ok = o.error === undefined;
      const canary = canaryPair(policy, route.stable);
      if (canary) this.recorder.side(canary, route.route === 'canary' ? 'c' : 's', ok, o.totalMs);
      const shadow = route.route === 'stable' ? shadowPair(policy, route.stable) : undefined;
      if (shadow) this.recorder.side(shadow, 's', ok, o.totalMs);
    }
    if (!o.result || !o.input) return;
    if (route.mirror && route.stable !== undefined) this.mirror(o as Required<Pick<Outcome, 'result' | 'input'>> & Outcome, route.stable);
    if (this.capture.sampled(policy.capture))
      this.capture.write(policy.capture, {
        model: route.mv.name,
        version: route.mv.version,
        route: route.route,
        requestId: o.requestId,
        ...(o.traceId ? { traceId: o.traceId } : {}),
        at: Date.now(),
        input: o.input,
        outputs: o.result.outputs,
        predictions: o.result.predictions,
        timings: o.result.timings,
        cached: o.result.cached,
      });
  }

  private mirror(o: Outcome & { result: PredictionResult; input: NormalizedInput }, stable: string): void {
    const { mv, kind } = o.route.mirror!;
    const policy = o.route.policy!;
    const pair = kind === 'shadow' ? shadowPair(policy, stable) : canaryPair(policy, stable);
    if (!pair) return;
    const count = (outcome: string): void => void this.metrics.mirrored.inc({ model: mv.name, kind, version: mv.version, outcome });
    const shed = (reason: ShedReason): void => {
      this.recorder.mirrorShed(pair, reason);
      count('shed');
    };
    this.recorder.mirrorSent(pair);
    if (!this.run || this.stopping) return shed('shutdown');
    if (this.inFlight >= MIRRORS_IN_FLIGHT) return shed('busy');
    const settings = policy.rollout.shadow ?? ROLLOUT_DEFAULTS.shadow;
    const run = this.run;
    this.inFlight++;
    // After the answer: the client's response is on its way before the mirrored work begins.
    setImmediate(() => {
      const started = performance.now();
      run(mv, o.input, o.rows ?? 1, { timeoutMs: settings.timeoutMs, maxQueueDepth: settings.maxQueueDepth, requestId: o.requestId })
        .then(
          (other) => {
            const [a, b] = kind === 'shadow' ? [o.result, other] : [other, o.result];
            const c = compareResults(a, b);
            this.recorder.mirrorCompared(pair, c);
            if (kind === 'shadow') this.recorder.side(pair, 'c', true, performance.now() - started);
            this.metrics.comparedRows.inc({ model: mv.name, kind }, c.rows);
            this.metrics.agreedRows.inc({ model: mv.name, kind }, c.agreedRows);
            count('compared');
          },
          (e: unknown) => {
            const err = asServingError(e);
            const reason = shedReason(err, this.stopping);
            if (reason) return shed(reason);
            this.recorder.mirrorFailed(pair, err.code);
            if (kind === 'shadow') this.recorder.side(pair, 'c', false, performance.now() - started);
            count('failed');
          },
        )
        .catch((e: Error) => this.deps.logger.error({ err: e.message, model: mv.name }, 'comparison failed'))
        .finally(() => this.inFlight--);
    });
  }

  /** Stops sending mirrored work (shutdown): what is sampled from now on is shed. */
  stop(): void {
    this.stopping = true;
  }

  /** Writes the last figures. */
  async close(): Promise<void> {
    this.stop();
    await this.recorder.close();
  }

  /** The policy of `model` with its pairs' figures; undefined for a model the repository does not have. */
  async report(model: string): Promise<RolloutReport | undefined> {
    const policy = this.policies.get(model);
    if (!policy) return undefined;
    const { redis, keys } = this.deps;
    const stable = stableVersionOf(this.deps.repository(), model, policy)?.version ?? null;
    const pairs = stable === null ? [] : [canaryPair(policy, stable), shadowPair(policy, stable)].filter((p): p is Pair => p !== undefined);
    return { policy, stable, comparisons: await Promise.all(pairs.map((p) => readComparison(redis, keys, p))) };
  }

  /**
   * Judges every canary by its policy's gates and rolls back those that break one (the
   * `rollout-gates` maintenance task runs this in one API process at a time).
   */
  async checkGates(): Promise<(GateVerdict & { model: string; version: string })[]> {
    const { redis, keys } = this.deps;
    const fired: (GateVerdict & { model: string; version: string })[] = [];
    for (const model of this.deps.repository().policies.keys()) {
      const policy = this.policies.get(model);
      const canary = policy?.rollout.canary;
      const stable = policy && stableVersionOf(this.deps.repository(), model, policy);
      if (!policy || !canary || !policy.rollout.gates || !stable) continue;
      const figures = await readComparison(redis, keys, canaryPair(policy, stable.version)!);
      const drift =
        policy.rollout.gates.driftAlpha !== undefined ? await readDriftReport(redis, keys, modelKey(model, canary.version)) : undefined;
      const verdict = judgeCanary(policy.rollout.gates, figures, drift, sinceMs(policy.canarySince));
      if (!verdict) continue;
      const done = await this.rollback(model, { by: 'gate', gate: verdict.gate, reason: verdict.reason, version: canary.version }).then(
        () => true,
        (e: Error) => {
          // Another change got there first (an admin's, another gate check's): judged again next time.
          this.deps.logger.info({ model, err: e.message }, 'gate rollback not applied');
          return false;
        },
      );
      if (done) fired.push({ ...verdict, model, version: canary.version });
    }
    return fired;
  }

  /** Removes the canary; its requests go to the stable. Says why in the log, the metrics and the policy. */
  async rollback(model: string, o: { by: string; reason?: string; gate?: string; version?: string }): Promise<TrafficPolicy> {
    let version = '';
    const next = await this.policies.change(model, o.by, (current) => {
      const canary = current.rollout.canary;
      if (!canary) throw badInput('model', `model '${model}' has no canary to roll back`);
      if (o.version !== undefined && canary.version !== o.version)
        throw new ServingError('BAD_USER_INPUT', `the canary of '${model}' is now ${canary.version}, not ${o.version}`);
      version = canary.version;
      const { canary: _gone, ...rollout } = current.rollout;
      return {
        rollout,
        canarySince: undefined,
        lastRollback: {
          version,
          at: Date.now(),
          by: o.by,
          ...(o.gate ? { gate: o.gate } : {}),
          reason: o.reason ?? `rolled back by ${o.by}`,
        },
      };
    });
    const gate = o.gate ?? 'admin';
    this.metrics.rollbacks.inc({ model, version, gate });
    this.deps.logger.warn({ model, version, gate, by: o.by, reason: next.lastRollback?.reason }, 'canary rolled back');
    return next;
  }

  /** Makes `version` (the canary's by default) the stable; it stops being the canary or the shadow. */
  async promote(model: string, version: string | null | undefined, by: string): Promise<TrafficPolicy> {
    const next = await this.policies.change(model, by, (current) => {
      const target = version ?? current.rollout.canary?.version;
      if (!target) throw badInput('version', `model '${model}' has no canary; name the version to promote`);
      this.requireReady(model, target, 'version');
      const rollout: RolloutSpec = { ...current.rollout, stable: target };
      const out: Partial<TrafficPolicy> = { rollout };
      if (rollout.canary?.version === target) {
        delete rollout.canary;
        out.canarySince = undefined;
      }
      if (rollout.shadow?.version === target) {
        delete rollout.shadow;
        out.shadowSince = undefined;
      }
      return out;
    });
    this.deps.logger.info({ model, stable: next.rollout.stable, by }, 'version promoted to stable');
    return next;
  }

  /** Changes the rollout (stable, canary, shadow, gates): a field left out stays, null clears it. */
  async set(model: string, change: RolloutChange, by: string): Promise<TrafficPolicy> {
    const fail: Fail = (field, message) => {
      throw badInput(field, message);
    };
    return this.policies.change(model, by, (current) => {
      const rollout: RolloutSpec = { ...current.rollout };
      const has = (k: keyof RolloutChange): boolean => Object.hasOwn(change, k) && change[k] !== undefined;
      if (has('stable')) {
        if (change.stable === null) delete rollout.stable;
        else rollout.stable = this.requireReady(model, String(change.stable), 'policy.stable');
      }
      if (has('canary')) rollout.canary = change.canary === null ? undefined : parseCanary(change.canary, 'policy.canary', fail);
      if (has('shadow')) rollout.shadow = change.shadow === null ? undefined : parseShadow(change.shadow, 'policy.shadow', fail);
      if (has('gates')) rollout.gates = change.gates === null ? undefined : parseGates(change.gates, 'policy.gates', fail);
      for (const k of ['canary', 'shadow', 'gates'] as const) if (rollout[k] === undefined) delete rollout[k];
      if (rollout.canary) this.requireReady(model, rollout.canary.version, 'policy.canary.version');
      if (rollout.shadow) this.requireReady(model, rollout.shadow.version, 'policy.shadow.version');
      const stable = rollout.stable ?? stableVersionOf(this.deps.repository(), model, undefined)?.version;
      checkRollout({ ...rollout, stable }, 'policy', fail);
      const now = String(Date.now());
      return {
        rollout,
        canarySince: rollout.canary ? (rollout.canary.version === current.rollout.canary?.version ? current.canarySince : now) : undefined,
        shadowSince: rollout.shadow ? (rollout.shadow.version === current.rollout.shadow?.version ? current.shadowSince : now) : undefined,
      };
    });
  }

  /** Changes the capture (a field left out stays); `percent: 0` switches it off. */
  setCapture(model: string, change: unknown, by: string): Promise<TrafficPolicy> {
    const fail: Fail = (field, message) => {
      throw badInput(field, message);
    };
    return this.policies.change(model, by, (current) => ({ capture: parseCapture(change, fail, 'capture', current.capture) }));
  }

  private requireReady(model: string, version: string, field: string): string {
    const mv = this.deps.repository().find(model, version);
    if (!mv) throw badInput(field, `model '${model}' has no version '${version}'`);
    if (mv.status !== 'READY') throw badInput(field, `version ${version} of '${model}' failed to load: ${mv.error}`);
    return version;
  }

  /** Captured requests of `model`, oldest first (see readCaptures). */
  captures(model: string, o: { since?: number; after?: string; count: number }): Promise<{ entries: CaptureEntry[]; next?: string }> {
    return readCaptures(this.deps.redis, this.deps.keys, model, o);
  }

  /** The deployment-wide gauges, read when /metrics is scraped. */
  async collect(): Promise<void> {
    const m = this.metrics;
    const reports = await Promise.all([...this.deps.repository().policies.keys()].map((model) => this.report(model)));
    for (const g of [m.trafficPercent, m.agreement, m.maxAbsDiff, m.maxRelDiff, m.errorRate, m.latencyDelta]) g.reset();
    for (const r of reports) {
      if (!r) continue;
      const { model, rollout } = r.policy;
      const canaryPercent = rollout.canary?.percent ?? 0;
      if (r.stable !== null) m.trafficPercent.set({ model, version: r.stable, role: 'stable' }, 100 - canaryPercent);
      if (rollout.canary) m.trafficPercent.set({ model, version: rollout.canary.version, role: 'canary' }, canaryPercent);
      if (rollout.shadow) m.trafficPercent.set({ model, version: rollout.shadow.version, role: 'shadow' }, rollout.shadow.percent);
      for (const c of r.comparisons) {
        const pair = { model, kind: c.kind, stable: c.stable, candidate: c.candidate };
        if (c.agreement !== null) m.agreement.set(pair, c.agreement);
        if (c.maxAbsDiff !== null) m.maxAbsDiff.set(pair, c.maxAbsDiff);
        if (c.maxRelDiff !== null) m.maxRelDiff.set(pair, c.maxRelDiff);
        for (const [side, f] of [
          ['stable', c.stableSide],
          ['candidate', c.candidateSide],
        ] as const)
          if (f.errorRate !== null) m.errorRate.set({ model, kind: c.kind, version: f.version, side }, f.errorRate);
        if (c.latencyDeltaP50Ms !== null) m.latencyDelta.set({ ...pair, quantile: '0.5' }, c.latencyDeltaP50Ms / 1000);
        if (c.latencyDeltaP99Ms !== null) m.latencyDelta.set({ ...pair, quantile: '0.99' }, c.latencyDeltaP99Ms / 1000);
      }
    }
  }
}
