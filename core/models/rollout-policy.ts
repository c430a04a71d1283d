/**
 * A model's traffic policy: which version answers requests that name none (the stable), a
 * canary that takes a share of them, a shadow that is also run on a share of the stable's
 * requests without its answer reaching anyone, the gates that roll a canary back, and the
 * payload capture. A model states it in its config.yaml (`rollout:` and `capture:`); admin
 * mutations change it live (core/rollout/policies.ts keeps the live copy in Redis).
 *
 * Here are the types, the defaults ({@link ROLLOUT_DEFAULTS}, {@link CAPTURE_DEFAULTS}: the
 * one statement of those numbers; the README's table says the same) and the parsers that
 * check a section and fill them in. Percentages are of requests, 0-100, as KServe's
 * `canaryTrafficPercent` and SageMaker's shadow `SamplingPercentage` are.
 */
import { createHash } from 'node:crypto';

export interface CanarySpec {
  version: string;
  /** Share of the requests that name no version sent to the canary, 0-100. */
  percent: number;
  /**
   * Share of the canary's requests also run on the stable, in the background and after the
   * answer, so that their outputs can be compared (agreement, differences). 0-100. @defaultValue 0
   */
  comparePercent: number;
}

export interface ShadowSpec {
  version: string;
  /** Share of the stable's requests also run on the shadow, after the answer, 0-100. */
  percent: number;
  /** Deadline of a shadow run: past it, the run is dropped (unrun if no worker took it). @defaultValue 5000 */
  timeoutMs: number;
  /**
   * Shadow work is refused (and counted as shed) once the model's pool has this many jobs
   * waiting, long before `queue.maxDepth` refuses real work. @defaultValue 100
   */
  maxQueueDepth: number;
}

/** Rules that roll a canary back automatically; a rule left out is not applied. */
export interface GateSpec {
  /** Requests the canary must have answered (and comparisons made, for `minAgreement`) before any rule judges it. @defaultValue 100 */
  minRequests: number;
  /** Roll back when the canary's error rate is above the stable's by more than this (0-1). */
  maxErrorRateIncrease?: number;
  /** Roll back when the share of compared rows whose labels agree falls below this (0-1); needs `canary.comparePercent`. */
  minAgreement?: number;
  /** Roll back when the drift monitor's p-value for the canary version falls below this. */
  driftAlpha?: number;
}

/** `rollout:` in a model's config.yaml. */
export interface RolloutSpec {
  /** The version requests without one get. Left out, the newest ready version (a new folder then takes every such request at once). */
  stable?: string;
  canary?: CanarySpec;
  shadow?: ShadowSpec;
  gates?: GateSpec;
}

/** `capture:` in a model's config.yaml: a sampled share of requests, with their outputs, kept for retraining and audit. */
export interface CaptureSpec {
  /** Share of requests captured, 0-100; 0 is off. @defaultValue 0 */
  percent: number;
  /** A capture whose JSON is larger than this many bytes is dropped (and counted). @defaultValue 65536 */
  maxBytes: number;
  /** Length cap of the model's capture stream (XADD MAXLEN ~, so it may run over by part of a stream node). @defaultValue 10000 */
  maxEntries: number;
  /** Captures older than this are trimmed, and the stream expires this long after its last write. @defaultValue 604800 */
  ttlSeconds: number;
}

type DeepReadonly<T> = { readonly [K in keyof T]: T[K] extends object ? DeepReadonly<T[K]> : T[K] };

function frozen<T extends object>(o: T): DeepReadonly<T> {
  for (const v of Object.values(o)) if (typeof v === 'object' && v !== null) frozen(v);
  return Object.freeze(o) as DeepReadonly<T>;
}

/** What a `rollout:` section gets for each field it leaves out: the one statement of these numbers. */
export const ROLLOUT_DEFAULTS = frozen({
  canary: { comparePercent: 0 },
  shadow: { timeoutMs: 5000, maxQueueDepth: 100 },
  gates: { minRequests: 100 },
});

/** What a `capture:` section gets for each field it leaves out (and a model without one: capture off). */
export const CAPTURE_DEFAULTS: DeepReadonly<CaptureSpec> = frozen({
  percent: 0,
  maxBytes: 65_536,
  maxEntries: 10_000,
  ttlSeconds: 604_800,
});

/** Throws for a field at fault; the config file and the admin mutations say it each their way. */
export type Fail = (field: string, message: string) => never;

type Raw = Record<string, unknown>;

const isMap = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);

function section(raw: unknown, at: string, fail: Fail, known: readonly string[]): Raw {
  if (!isMap(raw)) fail(at, 'must be a mapping');
  for (const k of Object.keys(raw)) if (!known.includes(k)) fail(`${at}.${k}`, `is not a setting; expected one of ${known.join(', ')}`);
  return raw;
}

function version(raw: unknown, at: string, fail: Fail): string {
  // YAML reads `stable: 2` as a number; a version is a folder name.
  if (typeof raw === 'number' && Number.isInteger(raw) && raw >= 0) return String(raw);
  if (typeof raw !== 'string' || raw.trim() === '') fail(at, 'must name a version (its folder)');
  return raw.trim();
}

function number(raw: unknown, at: string, fail: Fail, min: number, max: number, fallback?: number): number {
  if (raw === undefined || raw === null) {
    if (fallback === undefined) fail(at, 'is required');
    return fallback;
  }
  if (typeof raw !== 'number' || !Number.isFinite(raw) || raw < min || raw > max) fail(at, `must be a number from ${min} to ${max}`);
  return raw;
}

function integer(raw: unknown, at: string, fail: Fail, min: number, fallback: number): number {
  const n = number(raw, at, fail, min, Number.MAX_SAFE_INTEGER, fallback);
  if (!Number.isInteger(n)) fail(at, `must be a whole number from ${min}`);
  return n;
}

export function parseCanary(raw: unknown, at: string, fail: Fail): CanarySpec {
  const r = section(raw, at, fail, ['version', 'percent', 'comparePercent']);
  return {
    version: version(r.version, `${at}.version`, fail),
    percent: number(r.percent, `${at}.percent`, fail, 0, 100),
    comparePercent: number(r.comparePercent, `${at}.comparePercent`, fail, 0, 100, ROLLOUT_DEFAULTS.canary.comparePercent),
  };
}

export function parseShadow(raw: unknown, at: string, fail: Fail): ShadowSpec {
  const r = section(raw, at, fail, ['version', 'percent', 'timeoutMs', 'maxQueueDepth']);
  return {
    version: version(r.version, `${at}.version`, fail),
    percent: number(r.percent, `${at}.percent`, fail, 0, 100),
    timeoutMs: integer(r.timeoutMs, `${at}.timeoutMs`, fail, 1, ROLLOUT_DEFAULTS.shadow.timeoutMs),
    maxQueueDepth: integer(r.maxQueueDepth, `${at}.maxQueueDepth`, fail, 1, ROLLOUT_DEFAULTS.shadow.maxQueueDepth),
  };
}

export function parseGates(raw: unknown, at: string, fail: Fail): GateSpec {
  const r = section(raw, at, fail, ['minRequests', 'maxErrorRateIncrease', 'minAgreement', 'driftAlpha']);
  const optional = (k: string): number | undefined => (r[k] == null ? undefined : number(r[k], `${at}.${k}`, fail, 0, 1));
  return {
    minRequests: integer(r.minRequests, `${at}.minRequests`, fail, 1, ROLLOUT_DEFAULTS.gates.minRequests),
    maxErrorRateIncrease: optional('maxErrorRateIncrease'),
    minAgreement: optional('minAgreement'),
    driftAlpha: optional('driftAlpha'),
  };
}

/** Checks what one policy says as a whole: versions apart, and a gate that can be measured. */
export function checkRollout(spec: RolloutSpec, at: string, fail: Fail): RolloutSpec {
  const { stable, canary, shadow, gates } = spec;
  if (canary && stable !== undefined && canary.version === stable) fail(`${at}.canary.version`, `is the stable version (${stable})`);
  if (shadow && stable !== undefined && shadow.version === stable) fail(`${at}.shadow.version`, `is the stable version (${stable})`);
  if (gates?.minAgreement !== undefined && !(canary && canary.comparePercent > 0))
    fail(
      `${at}.gates.minAgreement`,
      'needs canary.comparePercent above 0: agreement is measured on canary requests also run on the stable',
    );
  return spec;
}

/** Validates a `rollout:` section and fills in {@link ROLLOUT_DEFAULTS}. */
export function parseRollout(raw: unknown, fail: Fail, at = 'rollout'): RolloutSpec {
  if (raw === undefined || raw === null) return {};
  const r = section(raw, at, fail, ['stable', 'canary', 'shadow', 'gates']);
  const spec: RolloutSpec = {};
  if (r.stable != null) spec.stable = version(r.stable, `${at}.stable`, fail);
  if (r.canary != null) spec.canary = parseCanary(r.canary, `${at}.canary`, fail);
  if (r.shadow != null) spec.shadow = parseShadow(r.shadow, `${at}.shadow`, fail);
  if (r.gates != null) spec.gates = parseGates(r.gates, `${at}.gates`, fail);
  return checkRollout(spec, at, fail);
}

/** Validates a `capture:` section (or a change of it over `base`) and fills in {@link CAPTURE_DEFAULTS}. */
export function parseCapture(raw: unknown, fail: Fail, at = 'capture', base: CaptureSpec = CAPTURE_DEFAULTS): CaptureSpec {
  if (raw === undefined || raw === null) return { ...base };
  const r = section(raw, at, fail, ['percent', 'maxBytes', 'maxEntries', 'ttlSeconds']);
  return {
    percent: number(r.percent, `${at}.percent`, fail, 0, 100, base.percent),
    maxBytes: integer(r.maxBytes, `${at}.maxBytes`, fail, 1, base.maxBytes),
    maxEntries: integer(r.maxEntries, `${at}.maxEntries`, fail, 1, base.maxEntries),
    ttlSeconds: integer(r.ttlSeconds, `${at}.ttlSeconds`, fail, 1, base.ttlSeconds),
  };
}

/** How an automatic or an operator's rollback is remembered (and shown). */
export interface RollbackRecord {
  version: string;
  at: number;
  /** `gate`, or the API key name of the admin who asked. */
  by: string;
  /** The rule that fired (`error-rate`, `agreement`, `drift`), for a gate. */
  gate?: string;
  reason: string;
}

/**
 * The policy a model runs under: its config.yaml's, or a live one an admin or a gate stored
 * over it (core/rollout/policies.ts says which wins).
 */
export interface TrafficPolicy {
  model: string;
  rollout: RolloutSpec;
  capture: CaptureSpec;
  source: 'config' | 'live';
  /** 0 for the config's; each stored change adds one. */
  revision: number;
  /** The digest of the config sections a live policy was made over ({@link configBasis}). */
  basis: string;
  updatedAt?: number;
  updatedBy?: string;
  /**
   * When the current canary and shadow began, their comparisons counting from then: epoch ms
   * (as text) of the live change that set them, or `cfg-<basis>` for those of the config.yaml.
   */
  canarySince?: string;
  shadowSince?: string;
  lastRollback?: RollbackRecord;
}

/** A digest of a model's `rollout:` and `capture:` sections as its config.yaml states them. */
export function configBasis(rollout: RolloutSpec, capture: CaptureSpec): string {
  return createHash('sha256').update(JSON.stringify({ rollout, capture })).digest('hex').slice(0, 16);
}

/** The policy of a model's config.yaml. */
export function configPolicy(model: string, rollout: RolloutSpec, capture: CaptureSpec): TrafficPolicy {
  const basis = configBasis(rollout, capture);
  return {
    model,
    rollout,
    capture,
    source: 'config',
    revision: 0,
    basis,
    ...(rollout.canary ? { canarySince: `cfg-${basis}` } : {}),
    ...(rollout.shadow ? { shadowSince: `cfg-${basis}` } : {}),
  };
}

/** Epoch ms a `since` stands for (0 for a config's: it holds since the file said so). */
export function sinceMs(since: string | undefined): number {
  const n = Number(since);
  return Number.isFinite(n) ? n : 0;
}

/** A model's `rollout:` and `capture:` as its files state them. */
export interface ModelPolicySpec {
  rollout: RolloutSpec;
  capture: CaptureSpec;
}

/**
 * Reads `rollout:` and `capture:` from a model's config.yaml, with the deployment's override
 * of them when it has one (`models.overrides`). Throws an Error naming the field at fault.
 */
export function readPolicySpec(base: Raw | undefined, deployed: Raw | undefined): ModelPolicySpec {
  const fail: Fail = (field, message) => {
    throw new Error(`'${field}' ${message}`);
  };
  const pick = (k: string): unknown => (deployed && k in deployed ? deployed[k] : base?.[k]);
  return { rollout: parseRollout(pick('rollout'), fail), capture: parseCapture(pick('capture'), fail) };
}
