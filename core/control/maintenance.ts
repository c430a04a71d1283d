/**
 * Periodic work on BullMQ job schedulers (v6 has no legacy repeatable jobs):
 *   - `poll-models`: fingerprints the model repository; on a change, tells every process
 *     (control channel) to rescan, so a new version loads without a restart;
 *   - `housekeeping`: drops old failed jobs and dead worker entries, and tells processes to
 *     purge expired cache entries (results themselves expire by TTL in Redis);
 *   - `drift-monitor`: the chi-square test of recent predictions per model (core/drift/monitor.ts);
 *   - `rollout-gates`: judges every canary by its policy's gates and rolls back those that
 *     break one (core/rollout/rollout.ts).
 * The schedulers are upserted once per pattern set (a SET NX guard), not by every replica
 * (BullMQ #3262, #3063); every process may run the maintenance worker, and each tick's job
 * runs in exactly one of them.
 */
import { createHash } from 'node:crypto';
import { Queue, Worker, type Job } from 'bullmq';
import type { RedisClient } from '../redis/connection.ts';
import type { BatchlineConfig } from '../config/settings.ts';
import { queueNames } from '../prediction/queues.ts';
import type { Keyspace } from '../redis/connection.ts';
import { createRedis } from '../redis/connection.ts';
import type { Logger } from '../telemetry/logger.ts';
import { repositoryFingerprint, type ModelRepository } from '../models/repository.ts';
import { checkDrift, type DriftReport } from '../drift/monitor.ts';
import type { WorkerRegistry } from './worker-registry.ts';

export const MAINTENANCE_QUEUE = 'maintenance';
export type MaintenanceTask = 'poll-models' | 'housekeeping' | 'drift-monitor' | 'rollout-gates';
export type ControlMessage =
  | { type: 'models-changed'; fingerprint: string }
  | { type: 'housekeeping' }
  /** A model's live traffic policy changed (core/rollout/policies.ts): API processes re-read it. */
  | { type: 'rollout-changed'; model: string };

export interface MaintenanceDeps {
  config: BatchlineConfig;
  redis: RedisClient;
  keys: Keyspace;
  logger: Logger;
  registry: WorkerRegistry;
  /** The repository as this process sees it now. */
  repository: () => ModelRepository;
  /** The rollout's gate check (API processes); without it the task does nothing. */
  rolloutGates?: () => Promise<unknown[]>;
}

export class Maintenance {
  private readonly deps: MaintenanceDeps;
  private queue?: Queue;
  private worker?: Worker;

  constructor(deps: MaintenanceDeps) {
    this.deps = deps;
  }

  /** Registers the schedulers (once per pattern set across all replicas) and runs the maintenance worker. */
  async start(): Promise<void> {
    const { config, logger } = this.deps;
    const m = config.maintenance;
    const name = this.deps.keys.queueName(MAINTENANCE_QUEUE);
    this.queue = new Queue(name, { connection: this.deps.redis, prefix: config.redis.prefix });
    this.queue.on('error', (e) => logger.debug({ err: e.message }, 'maintenance queue connection error'));
    const schedule: [MaintenanceTask, string][] = [
      ['poll-models', m.pollModels],
      ['housekeeping', m.housekeeping],
      ['drift-monitor', m.driftMonitor],
      ['rollout-gates', m.rolloutGates],
    ];
    const hash = createHash('sha256').update(JSON.stringify(schedule)).digest('hex').slice(0, 16);
    const first = await this.deps.redis.set(this.deps.keys.schedulersRegistered(hash), String(process.pid), 'EX', 7 * 24 * 3600, 'NX');
    if (first === 'OK') {
      for (const [task, pattern] of schedule) {
        await this.queue.upsertJobScheduler(
          task,
          { pattern },
          { name: task, opts: { removeOnComplete: true, removeOnFail: { count: 100 } } },
        );
      }
      logger.info({ schedule: Object.fromEntries(schedule) }, 'maintenance schedulers registered');
    }
    this.worker = new Worker(name, (job: Job) => this.run(job.name as MaintenanceTask), {
      connection: createRedis(config.redis, 'blocking'),
      prefix: config.redis.prefix,
      concurrency: 1,
    });
    this.worker.on('error', (e) => logger.debug({ err: e.message }, 'maintenance worker connection error'));
    this.worker.on('failed', (job, e) => logger.warn({ task: job?.name, err: e.message }, 'maintenance task failed'));
  }

  /** Runs one task now (the scheduler's jobs call this; so can an operator). */
  async run(task: MaintenanceTask): Promise<unknown> {
    switch (task) {
      case 'poll-models':
        return this.pollModels();
      case 'housekeeping':
        return this.housekeeping();
      case 'drift-monitor':
        return this.driftMonitor();
      case 'rollout-gates':
        return (await this.deps.rolloutGates?.()) ?? [];
      default:
        throw new Error(`unknown maintenance task ${String(task)}`);
    }
  }

  /**
   * Publishes the repository's fingerprint on every poll; each process rescans when it
   * differs from that of its own last scan. (Comparing against the previous poll instead
   * would miss a version dropped in between a process's start and the first poll.)
   */
  async pollModels(): Promise<{ changed: boolean; fingerprint: string }> {
    const { redis, keys, config, logger } = this.deps;
    const fingerprint = repositoryFingerprint(config.models.repository);
    const previous = await redis.getset(keys.modelsFingerprint, fingerprint);
    const changed = previous !== fingerprint;
    if (changed) logger.info({ fingerprint }, 'model repository changed');
    await redis.publish(keys.control, JSON.stringify({ type: 'models-changed', fingerprint } satisfies ControlMessage));
    return { changed, fingerprint };
  }

  async housekeeping(): Promise<{ failedJobsRemoved: number; deadWorkers: number }> {
    const { redis, keys, config } = this.deps;
    let removed = 0;
    for (const { name } of queueNames(keys, config.queue.shards)) {
      const q = new Queue(name, { connection: redis, prefix: config.redis.prefix });
      removed += (await q.clean(config.results.ttlSeconds * 1000, 1000, 'failed')).length;
      await q.close();
    }
    const before = await this.deps.registry.size();
    const alive = (await this.deps.registry.alive()).length;
    await redis.publish(keys.control, JSON.stringify({ type: 'housekeeping' } satisfies ControlMessage));
    return { failedJobsRemoved: removed, deadWorkers: before - alive };
  }

  async driftMonitor(): Promise<DriftReport[]> {
    const { redis, keys, config, logger } = this.deps;
    const m = config.maintenance;
    const reports: DriftReport[] = [];
    for (const v of this.deps.repository().ready()) {
      const report = await checkDrift(redis, keys, v, {
        windowMinutes: m.driftWindowMinutes,
        minSamples: m.driftMinSamples,
        alpha: m.driftAlpha,
      });
      if (!report) continue;
      reports.push(report);
      if (report.status === 'DRIFT') {
        logger.warn(
          {
            model: v.name,
            version: v.version,
            pValue: report.pValue,
            chiSquare: report.statistic,
            samples: report.samples,
            observed: report.observed,
            expected: report.expected,
          },
          'prediction drift: recent class mix departs from training',
        );
      }
    }
    return reports;
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.queue?.close();
  }
}
