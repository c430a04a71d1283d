/**
 * `batchline plan capacity --profile FILE --rate R --slo MS [--policy P] [--slots-per-replica N] [--json]`:
 * worker replicas and inference slots that hold R requests/s within a p99 of MS, from the
 * simulator (core/simulation/capacity.ts), for one policy or all three.
 */
import { parseArgs } from 'node:util';
import { label, type PolicyName } from '../core/simulation/configurations.ts';
import { planCapacity, type CapacityPlan } from '../core/simulation/capacity.ts';
import { loadProfile } from '../core/simulation/service.ts';

const USAGE =
  'usage: batchline plan capacity --profile FILE --rate REQUESTS_PER_SEC --slo MS [--policy fixed|aimd|predictive] [--slots-per-replica N] [--json]\n';
const POLICIES: PolicyName[] = ['fixed', 'aimd', 'predictive'];

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}
const stdio: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

function positive(name: string, text: string | undefined): number {
  const n = Number(text);
  if (text === undefined || !Number.isFinite(n) || n <= 0)
    throw new UsageError(`--${name} must be a number above 0, got ${text ?? 'nothing'}`);
  return n;
}

class UsageError extends Error {}

export function formatPlans(plans: CapacityPlan[], rate: number, sloMs: number, profile: string): string {
  const head = `capacity for ${rate} requests/s within p99 ${sloMs} ms, profile ${profile}, ${plans[0].slotsPerReplica} slot(s) per replica (load split evenly over replicas)\n`;
  const cols = [
    'policy',
    'per replica /s',
    'replicas',
    'slots',
    'p50 ms',
    'p99 ms',
    'queueing mean ms',
    'queueing p99 ms',
    'batch rows (mean)',
  ];
  const rows = plans.map((p) => [
    label(p.batching),
    p.perReplicaPerSec.toFixed(0),
    String(p.replicas),
    String(p.slots),
    p.atSize.p50.toFixed(1),
    p.atSize.p99.toFixed(1),
    p.atSize.waitMs.mean.toFixed(1),
    p.atSize.waitMs.p99.toFixed(1),
    p.atSize.batchRows.mean.toFixed(1),
  ]);
  const widths = cols.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r
      .map((x, i) => x.padEnd(widths[i]))
      .join('  ')
      .trimEnd() + '\n';
  const missed = plans
    .filter((p) => !p.atSize.withinSlo)
    .map((p) => `note: ${label(p.batching)} still missed the SLO at ${p.replicas} replicas\n`);
  return head + line(cols) + rows.map(line).join('') + missed.join('');
}

/** @returns the exit code: 0 done, 1 failed, 2 usage */
export async function runPlanCli(argv: string[], io: Io = stdio): Promise<number> {
  try {
    const [sub, ...rest] = argv;
    if (sub !== 'capacity') throw new UsageError(sub ? `unknown plan command ${sub}` : 'plan needs a command');
    const { values } = parseArgs({
      args: rest,
      options: {
        profile: { type: 'string' },
        rate: { type: 'string' },
        slo: { type: 'string' },
        policy: { type: 'string' },
        'slots-per-replica': { type: 'string' },
        json: { type: 'boolean' },
      },
      strict: true,
    });
    if (!values.profile) throw new UsageError('--profile is required');
    const rate = positive('rate', values.rate);
    const sloMs = positive('slo', values.slo);
    const slots = values['slots-per-replica'] === undefined ? undefined : positive('slots-per-replica', values['slots-per-replica']);
    if (slots !== undefined && !Number.isInteger(slots)) throw new UsageError(`--slots-per-replica must be a whole number, got ${slots}`);
    if (values.policy !== undefined && !POLICIES.includes(values.policy as PolicyName))
      throw new UsageError(`--policy must be one of ${POLICIES.join(', ')}, got ${values.policy}`);
    const profile = loadProfile(values.profile);
    const plans: CapacityPlan[] = [];
    for (const policy of values.policy ? [values.policy as PolicyName] : POLICIES) {
      plans.push(await planCapacity({ profile, ratePerSec: rate, sloMs, policy, slotsPerReplica: slots }));
    }
    io.out(values.json ? JSON.stringify(plans) + '\n' : formatPlans(plans, rate, sloMs, profile.name));
    return 0;
  } catch (e) {
    const err = e as Error & { code?: string };
    if (e instanceof UsageError || err.code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`${err.message}\n${USAGE}`);
      return 2;
    }
    io.err(`${err.message}\n`);
    return 1;
  }
}
