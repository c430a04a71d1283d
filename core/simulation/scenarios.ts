/**
 * The scenarios the policy tests and `npm run simulate` share: each shipped profile
 * (bench/profiles/) under steady (Poisson) and bursty arrivals, judged at a p99 of 50 ms.
 */
import { fileURLToPath } from 'node:url';
import { BURSTY, type ArrivalPattern } from './arrivals.ts';
import type { Scenario } from './search.ts';
import { loadProfile, ServiceModel } from './service.ts';

export const SLO_MS = 50;
export const PROFILES_DIR = fileURLToPath(new URL('../../bench/profiles/', import.meta.url));
/** Measured on the build machine (npm run simulate -- --profile). */
export const CPU_PROFILE = `${PROFILES_DIR}mlp-bench-cpu.json`;
/** Chosen, not measured: see its `source`. */
export const GPU_PROFILE = `${PROFILES_DIR}gpu-like.json`;

export const PATTERNS = { steady: { kind: 'poisson' } as ArrivalPattern, bursty: BURSTY };
export type PatternName = keyof typeof PATTERNS;

export function scenario(file: string, pattern: PatternName, sloMs = SLO_MS): Scenario {
  const profile = loadProfile(file);
  return { service: new ServiceModel(profile), slots: profile.slotsPerReplica, pattern: PATTERNS[pattern], sloMs, requests: 20_000 };
}
