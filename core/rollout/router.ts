/**
 * Which version answers a request, under a model's traffic policy: a request that names a
 * version gets it; the others go to the canary with its percentage and to the stable
 * otherwise. A client that sends a route key (`x-batchline-route-key`, or `routeKey`) is
 * placed by a hash of the model and the key instead of a coin, so one user sees one version
 * on every replica and across restarts, and raising the percentage only moves more keys over
 * (a key on the canary at 10% is still on it at 20%). The shadow and the canary's comparison
 * runs are sampled per request: they change nothing the client sees.
 */
import type { RolloutSpec } from '../models/rollout-policy.ts';

export type RouteKind = 'stable' | 'canary' | 'named';
export type MirrorKind = 'shadow' | 'canary';

export interface RouteChoice {
  /** The version that answers. */
  version: string;
  route: RouteKind;
  /** A second run for comparison, after the answer: the shadow (of a stable request) or the stable (of a canary request). */
  mirror?: { version: string; kind: MirrorKind };
}

/** Most characters of a route key that are read (a longer one is cut: a key names a user, not a document). */
export const ROUTE_KEY_MAX = 256;

/**
 * A route key's place in [0, 1) for a model: FNV-1a over the model and key, then murmur3's
 * finalizer so that keys differing in their last character land far apart.
 */
export function routeBucket(model: string, key: string): number {
  let h = 0x811c9dc5;
  const text = `${model}\u0000${key.slice(0, ROUTE_KEY_MAX)}`;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 2 ** 32;
}

export interface ChooseOptions {
  model: string;
  /** The version the client named, if any. */
  named?: string | null;
  /** The stable version (the policy's, or the newest ready one when it names none). */
  stable: string;
  policy: RolloutSpec | undefined;
  /** Whether a version can serve now (loaded and READY); a canary or shadow that cannot is skipped. */
  ready: (version: string) => boolean;
  routeKey?: string | null;
  /** [0, 1). @defaultValue Math.random */
  random?: () => number;
}

export function chooseRoute(o: ChooseOptions): RouteChoice {
  if (o.named) return { version: o.named, route: 'named' };
  const random = o.random ?? Math.random;
  const { canary, shadow } = o.policy ?? {};
  if (canary && canary.percent > 0 && canary.version !== o.stable && o.ready(canary.version)) {
    const u = o.routeKey ? routeBucket(o.model, o.routeKey) : random();
    if (u < canary.percent / 100) {
      const compare = canary.comparePercent > 0 && random() < canary.comparePercent / 100;
      return { version: canary.version, route: 'canary', ...(compare ? { mirror: { version: o.stable, kind: 'canary' } } : {}) };
    }
  }
  if (shadow && shadow.percent > 0 && shadow.version !== o.stable && o.ready(shadow.version) && random() < shadow.percent / 100)
    return { version: o.stable, route: 'stable', mirror: { version: shadow.version, kind: 'shadow' } };
  return { version: o.stable, route: 'stable' };
}
