/**
 * A worker process of one pool: start (models loaded on inference threads, the BullMQ
 * worker, the control channel), reload, heartbeat and stop. What is done with each job is
 * core/worker/processor.ts. The event loop here only moves jobs and bytes; inference runs on
 * threads, so lock renewals are never starved.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { DelayedError, Queue, Worker, type Job } from 'bullmq';
import { RedisPubSub } from 'graphql-redis-subscriptions';
import type { BatchlineConfig, PoolName } from '../core/config/settings.ts';
import { scanConfigured, type ModelRepository, type ModelVersion } from '../core/models/repository.ts';
import { InferencePool } from '../core/runtime/inference-pool.ts';
import { Batcher } from '../core/batching/batcher.ts';
import { ResultStore } from '../core/prediction/result-store.ts';
import { takenPartsReleaser } from '../core/prediction/queues.ts';
import { ReplyPublisher } from '../core/prediction/result-feed.ts';
import { createRedis, keysOf, whenReady, type RedisClient } from '../core/redis/connection.ts';
import { Deadline, RELEASE_MS } from '../core/lifecycle/shutdown.ts';
import { WorkerRegistry } from '../core/control/worker-registry.ts';
import { subscribeControl, type ControlSubscription } from '../core/control/channel.ts';
import { createMetrics, observeLatency, type Metrics } from '../core/telemetry/metrics.ts';
import { DriftCounter } from '../core/drift/monitor.ts';
import { StatsRecorder } from '../core/operations/live-stats.ts';
import type { Logger } from '../core/telemetry/logger.ts';
import { modelKey, type PredictionJobData } from '../core/prediction/record.ts';
import { JobProcessor } from '../core/worker/processor.ts';
import { traceInferenceBatch } from '../core/worker/tracing.ts';
import { batchingPlan } from '../core/batching/plan.ts';
import { workerShape } from '../core/worker/shape.ts';
import { providerChain } from '../core/runtime/providers.ts';
import { modelBudget, Residency } from '../core/worker/residency.ts';
import { readCgroupLimits } from '../core/worker/cgroup.ts';
import { laneWorkersOf, ownedLanes, StarvedLanes } from '../core/worker/placement.ts';

export interface WorkerOptions {
  config: BatchlineConfig;
  pool: PoolName;
  logger: Logger;
}

const HEARTBEAT_MS = 5_000;
/** How often a worker revisits which lanes it consumes under `queue.placement: model`. */
const PLACEMENT_MS = 1_000;
/** The time a job spent handed back while its version loaded, for the cold-start hook of its processing. */
const COLD_CREDIT = new AsyncLocalStorage<number>();
/** A job is handed back at most this often while its version waits to load; then it waits in place. */
const MAX_DEFERRALS = 3;

export class PredictionWorker {
  readonly id = randomUUID();
  readonly metrics: Metrics;
  private readonly options: WorkerOptions;
  private readonly log: Logger;
  private repository!: ModelRepository;
  private models = new Map<string, ModelVersion>();
  private inference!: InferencePool;
  /** Which versions are in memory, under the model memory budget (core/worker/residency.ts). */
  residency!: Residency;
  private batcher!: Batcher;
  private processor!: JobProcessor;
  /** One BullMQ worker per shard of the pool's queue (`queue.shards`), all feeding the one batcher. */
  private bulls: Worker<PredictionJobData>[] = [];
  private redis!: RedisClient;
  private store!: ResultStore;
  private registry!: WorkerRegistry;
  private heartbeat?: NodeJS.Timeout;
  private pubsub?: RedisPubSub;
  private control?: ControlSubscription;
  private drift?: DriftCounter;
  /** This worker's share of the operations view's live figures. */
  private stats?: StatsRecorder;
  private stopping = false;
  private reportedProvider?: string;
  private lastThrottleWarning = 0;
  /** Jobs this worker handed back while their version loaded ({@link deferred}): how often, and when first. */
  private readonly deferrals = new Map<string, { times: number; firstAt: number }>();
  private deferredJobs = 0;
  /** Lanes (shards) consumed now, by number; every shard under `queue.placement: any`. */
  private readonly lanes = new Map<number, Worker<PredictionJobData>>();
  private ownedLanes: number[] = [];
  private laneQueues?: Queue<PredictionJobData>[];
  private placement?: NodeJS.Timeout;
  private placing = false;
  /** Lanes whose next job has not moved for a while (a dead owner not yet expired): the next worker in rank joins. */
  private readonly starved = new StarvedLanes();
  private concurrency = 1;
  private readonly inHand = new Set<string>();
  private bullConnection?: RedisClient;

  constructor(options: WorkerOptions) {
    this.options = options;
    this.log = options.logger.child({ pool: options.pool, workerId: this.id });
    this.metrics = createMetrics('worker');
  }

  /** Keys (`name@version`) of the models this worker serves. */
  get loaded(): string[] {
    return [...this.models.keys()];
  }

  async start(): Promise<void> {
    const { config, pool } = this.options;
    this.repository = await scanConfigured(config, this.log);
    const mine = this.repository.ready().filter((v) => v.config.pool === pool);
    const maxBatch = Math.max(1, ...mine.map((v) => batchingPlan(pool, v.config).worker.maxBatchSize));
    const { executionProvider: requested, cpuFallback, webgpu } = config.workers;
    const budget = modelBudget(config.workers.modelMemoryBytes, readCgroupLimits());
    const rssBefore = process.memoryUsage.rss();
    // Throws ProviderUnavailableError, naming each provider and why, when none of the chain runs the models.
    // Under a budget the threads start empty: versions load on demand, pinned ones just below.
    this.inference = await InferencePool.start({
      models: budget.bytes === undefined ? mine.map((v) => ({ key: modelKey(v.name, v.version), path: v.path, config: v.config })) : [],
      threads: (provider) => workerShape(config, mine, maxBatch, undefined, provider).threads,
      chain: providerChain(requested, pool, cpuFallback),
      requested,
      settings: { intraOpThreads: workerShape(config, mine, maxBatch).intraOpThreads, webgpu },
    });
    this.residency = this.createResidency(budget.bytes);
    this.log.info({ modelMemoryBytes: budget.bytes ?? null, budget: budget.explanation }, 'model memory budget');
    if (budget.bytes !== undefined) {
      this.metrics.modelMemoryBudget.set(budget.bytes);
      for (const v of mine) this.serve(v);
      const pinned = mine.filter((v) => v.config.residency?.pinned).map((v) => modelKey(v.name, v.version));
      // Throws, naming the pinned versions and their sizes, when they alone exceed the budget: the worker does not start.
      await this.residency.loadPinned(pinned);
    } else {
      for (const f of this.inference.failed)
        this.log.error({ model: f.key, reason: f.error }, 'model failed to load in the inference thread; skipped');
      for (const v of mine) if (this.inference.loaded.includes(modelKey(v.name, v.version))) this.serve(v);
      this.residency.adopt(this.inference.loaded, process.memoryUsage.rss() - rssBefore);
    }
    this.reportProvider();
    const { explanation, ...shape } = workerShape(config, mine, maxBatch, undefined, this.inference.provider);
    this.log.info({ sizing: explanation }, 'worker sizing');

    this.batcher = new Batcher({
      run: (key, input, meta) => traceInferenceBatch(key, meta, () => this.inference.run(key, input, { transfer: true })),
      spec: (key) => batchingPlan(pool, this.models.get(key)?.config).worker,
      slots: shape.threads,
      onBatch: (e) => {
        this.metrics.batchRows.observe({ model: e.model }, e.rows);
        observeLatency(this.metrics.batchLatency, { model: e.model }, e.latencyMs / 1000);
        this.metrics.batchClosed.inc({ model: e.model, reason: e.reason });
        this.metrics.batchLimit.set({ model: e.model, policy: e.policy }, e.limit);
      },
    });

    // Results are written on a connection of their own, apart from BullMQ's.
    this.redis = createRedis(config.redis, 'producer');
    await whenReady(this.redis, 30_000);
    const keys = keysOf(this.redis, config.redis.prefix);
    this.store = new ResultStore(this.redis, keys, config.results.ttlSeconds);
    this.registry = new WorkerRegistry(this.redis, config.redis.prefix);
    this.drift = new DriftCounter(this.redis, keys, (config.maintenance.driftWindowMinutes + 5) * 60);
    const releaseTaken = takenPartsReleaser(this.redis, keys);
    this.processor = new JobProcessor({
      models: this.models,
      batcher: this.batcher,
      store: this.store,
      replies: new ReplyPublisher(this.redis),
      metrics: this.metrics,
      drift: this.drift,
      log: this.log,
      stopping: () => this.stopping,
      taken: (job) => releaseTaken(job.queueName, job.id!),
      coldStart: (key) => this.coldStart(key),
    });
    this.stats = new StatsRecorder({
      redis: this.redis,
      prefix: config.redis.prefix,
      registry: this.metrics.registry,
      process: {
        id: this.id,
        role: 'worker',
        pool,
        executionProvider: this.executionProvider,
        executionProviderNote: this.inference.describe(),
      },
    });
    this.stats.start();
    // The control channel through RedisPubSub, as the API hears it (core/control/channel.ts);
    // global pub/sub on a cluster too (core/redis/cluster.ts says why).
    this.pubsub = new RedisPubSub({ publisher: this.redis, subscriber: createRedis(config.redis, 'subscriber') });
    this.control = await subscribeControl(
      this.pubsub,
      keys,
      { fingerprint: () => this.repository.fingerprint, reload: () => this.reload() },
      this.log,
    );
    await this.announce();
    this.heartbeat = setInterval(() => void this.announce(), HEARTBEAT_MS);

    // Every shard of the pool, each with its share of the jobs in hand; one connection for all
    // of them (BullMQ gives each worker its own blocking connection besides).
    const shards = config.queue.shards[pool];
    this.bullConnection = createRedis(config.redis, 'blocking');
    this.concurrency = shape.concurrency;
    if (config.queue.placement === 'model' && shards > 1) {
      // Lanes by model version: this worker consumes the lanes it owns, and more while they are busy (core/worker/placement.ts).
      this.laneQueues = Array.from({ length: shards }, (_, lane) => {
        const q = new Queue<PredictionJobData>(keys.queueName(pool, lane, shards), { connection: this.redis, prefix: config.redis.prefix });
        q.on('error', () => {});
        return q;
      });
      await this.place();
      this.placement = setInterval(() => void this.place(), PLACEMENT_MS);
    } else {
      for (let shard = 0; shard < shards; shard++) this.openLane(shard, Math.ceil(shape.concurrency / shards));
    }
    this.log.info({ models: this.loaded, executionProvider: this.executionProvider, ...shape }, 'worker started');
  }

  /** Starts consuming shard (lane) `lane` of the pool's queue. */
  private openLane(lane: number, concurrency: number): Worker<PredictionJobData> {
    const { config, pool } = this.options;
    const shards = config.queue.shards[pool];
    const keys = keysOf(this.redis, config.redis.prefix);
    const bull = new Worker<PredictionJobData>(keys.queueName(pool, lane, shards), (job, token) => this.processJob(job, token), {
      connection: this.bullConnection!,
      prefix: config.redis.prefix,
      concurrency,
      // Inference runs on threads, so the loop stays free to renew locks on time.
      lockDuration: config.workers.lockDurationMs,
      stalledInterval: Math.max(500, Math.floor(config.workers.lockDurationMs / 2)),
      maxStalledCount: 2,
    });
    bull.on('error', (err) => this.log.warn({ err: err.message }, 'queue connection error'));
    this.trackJobsInHand(bull);
    bull.on('failed', (job, err) => this.processor.onFailed(job, err));
    // This worker's stall checker found a job whose worker stopped renewing its lock; BullMQ put it back.
    bull.on('stalled', () => this.metrics.stalledJobs.inc({ pool }));
    this.bulls.push(bull);
    this.lanes.set(lane, bull);
    return bull;
  }

  /**
   * Under `queue.placement: model`: takes up the lanes this worker now owns (by the pool's live
   * workers and each lane's waiting jobs) and lets go of the others. A lane let go finishes the
   * jobs it has in hand (BullMQ's close waits for them); its waiting jobs go to its new owner.
   */
  private async place(): Promise<void> {
    if (this.stopping || this.placing || !this.laneQueues) return;
    this.placing = true;
    try {
      const { pool } = this.options;
      // Who holds what, with how much free budget and load: every worker reads the same and agrees.
      const alive = laneWorkersOf(
        (await this.registry.alive()).filter((e) => e.pool === pool),
        this.laneQueues.length,
      );
      const [waiting, heads] = await Promise.all([
        Promise.all(this.laneQueues.map((q) => q.getJobCounts('wait', 'prioritized').then((c) => (c.wait ?? 0) + (c.prioritized ?? 0)))),
        // The job each lane runs next: the most urgent prioritized one, else the oldest unprioritized.
        Promise.all(
          this.laneQueues.map(
            async (q) => (await this.redis.zrange(q.keys.prioritized, 0, 0))[0] ?? (await this.redis.lindex(q.keys.wait, -1)) ?? undefined,
          ),
        ),
      ]);
      if (this.stopping) return;
      const now = Date.now();
      const wasStarved = [...this.starved.lanes];
      heads.forEach((head, lane) => this.starved.observe(lane, head, now));
      const starved = [...this.starved.lanes].filter((l) => !wasStarved.includes(l));
      if (starved.length) this.log.info({ lanes: starved }, 'lanes starved: their next job has not moved; the next worker in rank joins');
      const owned = ownedLanes(this.id, alive, waiting, this.concurrency, this.starved.lanes);
      const each = Math.max(1, Math.ceil(this.concurrency / Math.max(1, owned.length)));
      for (const [lane, bull] of this.lanes) {
        if (owned.includes(lane)) continue;
        this.lanes.delete(lane);
        void bull.close().then(() => (this.bulls = this.bulls.filter((b) => b !== bull)));
      }
      for (const lane of owned) {
        const bull = this.lanes.get(lane) ?? this.openLane(lane, each);
        if (bull.concurrency !== each) bull.concurrency = each;
      }
      const lanes = [...this.lanes.keys()].sort((a, b) => a - b);
      if (lanes.join() !== this.ownedLanes.join()) {
        this.ownedLanes = lanes;
        this.log.info({ lanes, waiting, starved: [...this.starved.lanes] }, 'queue lanes this worker consumes');
        void this.announce();
      }
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'placement: could not read the registry or the lanes; keeping the lanes held');
    } finally {
      this.placing = false;
    }
  }

  /**
   * One job: its model version is held (never evicted) from the moment the job is taken until
   * it is answered, whether it waits for a load, in a batch or on a thread.
   */
  private async processJob(job: Job<PredictionJobData>, token?: string): Promise<{ status: string }> {
    const key = modelKey(job.data.model, job.data.version);
    if (await this.deferred(job, key, token)) throw new DelayedError();
    // Handed back earlier while its version loaded: that wait was a cold start too (the answer's coldStartMs).
    const firstDeferred = this.deferrals.get(job.id!)?.firstAt;
    this.deferrals.delete(job.id!);
    this.residency.hold(key);
    try {
      return await COLD_CREDIT.run(firstDeferred === undefined ? 0 : Date.now() - firstDeferred, () => this.processor.process(job));
    } finally {
      this.residency.release(key);
    }
  }

  /**
   * A job for a version not in memory, while other loads are in hand, need not wait for them
   * holding one of this worker's BullMQ slots (which jobs of resident versions could use): the
   * job goes back to the queue delayed, its load is queued in the background, and the job is
   * promoted back to waiting as soon as the load ends (`workers.deferColdJobs`). At most
   * {@link MAX_DEFERRALS} times, never past its deadline; BullMQ keeps its priority and
   * attempts; it comes back to a worker of its lane (or any, without lanes).
   */
  private async deferred(job: Job<PredictionJobData>, key: string, token: string | undefined): Promise<boolean> {
    const r = this.residency;
    if (!token || !r.onDemand || !this.options.config.workers.deferColdJobs || r.isResident(key) || !r.busy) return false;
    const times = this.deferrals.get(job.id!)?.times ?? 0;
    // Promoted back to waiting as soon as its load ends; the delay is only the bound.
    const delay = Math.min(2000, Math.max(50, 2 * r.expectedWaitMs()));
    if (times >= MAX_DEFERRALS || (job.data.deadline !== undefined && Date.now() + delay >= job.data.deadline)) return false;
    try {
      await job.moveToDelayed(Date.now() + delay, token);
    } catch {
      return false;
    }
    void r.prefetch(key).then(() => job.promote().catch(() => {}));
    this.deferrals.set(job.id!, { times: times + 1, firstAt: this.deferrals.get(job.id!)?.firstAt ?? Date.now() });
    if (this.deferrals.size > 10_000) this.deferrals.clear();
    this.inHand.delete(job.id!);
    this.metrics.jobsDeferred.inc({ model: job.data.model });
    this.deferredJobs++;
    return true;
  }

  /** The processor's cold-start hook: waits for `key` to be resident; the wait is seen in metrics and the log. */
  private async coldStart(key: string): Promise<number> {
    const ms = (await this.residency.ensure(key)) + (COLD_CREDIT.getStore() ?? 0);
    if (ms > 0) {
      const [model] = key.split('@');
      this.metrics.coldStartSeconds.observe({ model }, ms / 1000);
      this.log.info({ model: key, coldStartMs: Math.round(ms) }, 'a job waited for its model version to load');
    }
    return ms;
  }

  private createResidency(budget: number | undefined): Residency {
    const labels = (key: string): { model: string; version: string } => {
      const at = key.lastIndexOf('@');
      return { model: key.slice(0, at), version: key.slice(at + 1) };
    };
    const undecided = (): boolean => this.reportedProvider === undefined && this.inference.provider !== undefined;
    return new Residency({
      budget,
      host: this.inference,
      versions: () => this.models,
      log: this.log,
      maxLoadsPerSecond: this.options.config.workers.maxModelLoadsPerSecond,
      events: {
        throttled: (e) => {
          this.metrics.loadThrottledSeconds.inc(e.ms / 1000);
          // One warning per 10 s at most: the working set is larger than the budget.
          if (Date.now() - this.lastThrottleWarning < 10_000) return;
          this.lastThrottleWarning = Date.now();
          this.log.warn(
            {
              model: e.key,
              waitedMs: Math.round(e.ms),
              maxModelLoadsPerSecond: this.options.config.workers.maxModelLoadsPerSecond,
              budgetBytes: this.residency.budget,
            },
            'model loads capped: the versions asked for do not fit the model memory budget together; jobs for evicted versions wait',
          );
        },
        loaded: (e) => {
          if (undecided()) this.reportProvider();
          const { model, version } = labels(e.key);
          this.metrics.modelLoads.inc({ model, version, outcome: 'ok' });
          this.metrics.modelLoadSeconds.observe({ model }, e.loadMs / 1000);
          this.metrics.residentBytes.set({ model, version, pinned: String(e.pinned) }, e.bytes);
          this.log.info(
            {
              model: e.key,
              loadMs: Math.round(e.loadMs),
              residentBytes: e.bytes,
              pinned: e.pinned,
              evicted: e.evicted,
              usedBytes: this.residency.usedBytes,
              budgetBytes: this.residency.budget,
            },
            'model version loaded',
          );
        },
        evicted: (e) => {
          const { model, version } = labels(e.key);
          this.metrics.modelEvictions.inc({ model, version });
          this.metrics.residentBytes.remove({ model, version, pinned: 'false' });
          this.log.info({ model: e.key, residentBytes: e.bytes, idleMs: Math.round(e.idleMs) }, 'model version evicted');
        },
        failed: (e) => {
          const { model, version } = labels(e.key);
          this.metrics.modelLoads.inc({ model, version, outcome: e.code });
          this.log.error({ model: e.key, code: e.code, reason: e.message }, 'model version cannot be loaded');
        },
        changed: () => {
          if (this.registry) void this.announce();
        },
      },
    });
  }

  /** The provider the sessions run on; `none` until the pool has had models to decide with. */
  get executionProvider(): string {
    return this.inference?.provider ?? 'none';
  }

  /**
   * One log line for the provider taken (a warning when the one asked for was not), and the
   * metrics that say the same. Called again after a reload, which may decide it.
   */
  private reportProvider(): void {
    const { pool, config } = this.options;
    const { provider, attempts } = this.inference;
    if (!provider) return;
    this.reportedProvider = provider;
    this.metrics.executionProvider.reset();
    this.metrics.providerSkipped.reset();
    this.metrics.executionProvider.set({ pool, provider, requested: config.workers.executionProvider }, 1);
    for (const a of attempts)
      if (!a.ok) this.metrics.providerSkipped.set({ pool, provider: a.provider, reason: a.kind ?? 'session-failed' }, 1);
    const skipped = attempts.filter((a) => !a.ok);
    const fields = {
      executionProvider: provider,
      requested: config.workers.executionProvider,
      skipped: skipped.map((a) => ({ provider: a.provider, reason: a.reason })),
    };
    const line = `${pool} pool runs on ${this.inference.describe()}`;
    // Asked for a provider by name and given another: a warning. `auto` walking past absent GPUs is expected.
    if (config.workers.executionProvider !== 'auto' && provider !== config.workers.executionProvider) this.log.warn(fields, line);
    else this.log.info(fields, line);
  }

  /**
   * Rescans the repository and loads versions of this pool it does not serve yet. Versions
   * already loaded stay loaded, so work in flight on an old version finishes on it.
   */
  async reload(): Promise<string[]> {
    const { config, pool } = this.options;
    const repo = await scanConfigured(config, this.log);
    const fresh = repo.ready().filter((v) => v.config.pool === pool && !this.models.has(modelKey(v.name, v.version)));
    if (fresh.length === 0) return [];
    if (this.residency.onDemand) {
      // Under a budget a new version is served at once and loads when work for it arrives (pinned ones now).
      for (const v of fresh) this.serve(v);
      this.repository = repo;
      const added = fresh.map((v) => modelKey(v.name, v.version));
      await this.residency
        .loadPinned(fresh.filter((v) => v.config.residency?.pinned).map((v) => modelKey(v.name, v.version)))
        .catch((e: Error) => this.log.error({ err: e.message }, 'new pinned model versions do not fit; they load on demand instead'));
      await this.announce();
      this.log.info({ added }, 'model versions added without restart (loaded on demand)');
      return added;
    }
    const undecided = !this.inference.provider;
    const rssBefore = process.memoryUsage.rss();
    const { loaded, failed } = await this.inference.load(
      fresh.map((v) => ({ key: modelKey(v.name, v.version), path: v.path, config: v.config })),
    );
    if (undecided) this.reportProvider();
    this.residency.adopt(
      loaded.filter((k) => !this.models.has(k)),
      process.memoryUsage.rss() - rssBefore,
    );
    for (const f of failed) this.log.error({ model: f.key, reason: f.error }, 'new model version failed to load; skipped');
    const added: string[] = [];
    for (const v of fresh) {
      const key = modelKey(v.name, v.version);
      if (loaded.includes(key)) {
        this.serve(v);
        added.push(key);
      }
    }
    this.repository = repo;
    await this.announce();
    this.log.info({ added }, 'model versions loaded without restart');
    return added;
  }

  /** True while the worker's own Redis connection (results, registry) is up. */
  redisReady(): boolean {
    return this.redis?.status === 'ready';
  }

  /** A loaded version joins the served ones; its SLO is what BatchlineModelOverSLO compares p99 with. */
  private serve(v: ModelVersion): void {
    this.models.set(modelKey(v.name, v.version), v);
    this.metrics.modelSlo.set({ model: v.name, version: v.version }, v.config.batching.sloMs / 1000);
  }

  /** Live batching policy and limit of a model, for the API's `models` query and metrics. */
  batchingState(key: string): { policy: string; limit: number } | undefined {
    if (!this.models.has(key)) return undefined;
    const p = this.batcher.policy(key);
    return { policy: p.name, limit: p.limit() };
  }

  private async announce(): Promise<void> {
    await this.registry
      .announce(
        {
          id: this.id,
          pool: this.options.pool,
          models: this.stopping ? [] : this.loaded,
          executionProvider: this.executionProvider,
          providerChoice: {
            requested: this.options.config.workers.executionProvider,
            skipped: this.inference.attempts.filter((a) => !a.ok).map((a) => ({ provider: a.provider, reason: a.reason ?? '' })),
          },
          batching: Object.fromEntries(this.loaded.map((k) => [k, this.batchingState(k)!])),
          ...(this.laneQueues ? { lanes: this.ownedLanes } : {}),
          jobs: { inHand: this.inHand.size, concurrency: this.concurrency },
          residency: {
            budgetBytes: this.residency.budget ?? null,
            usedBytes: this.residency.usedBytes,
            resident: this.stopping ? [] : this.residency.view().map(({ key, bytes, pinned, loadMs }) => ({ key, bytes, pinned, loadMs })),
            loads: this.residency.loads,
            loadsByVersion: Object.fromEntries(this.residency.loadsByVersion),
            evictions: this.residency.evictions,
            deferredJobs: this.deferredJobs,
            peakBytes: this.residency.peakBytes,
          },
        },
        HEARTBEAT_MS * 3,
      )
      .catch((e: Error) => this.log.warn({ err: e.message }, 'heartbeat failed'));
  }

  /** Jobs taken from the queue whose outcome BullMQ has not recorded yet. */
  private trackJobsInHand(bull: Worker<PredictionJobData>): void {
    bull.on('active', (job) => this.inHand.add(job.id!));
    bull.on('completed', (job) => this.inHand.delete(job.id!));
    bull.on('failed', (job) => job && this.inHand.delete(job.id!));
  }

  /**
   * Stops taking work, waits up to `shutdownTimeoutMs` for the jobs in hand, and releases
   * everything, in bounded time whatever Redis does (core/lifecycle/shutdown.ts). Resolves false when
   * it gave up on jobs: they are left to stall recovery, which hands them to another worker
   * once their locks expire. The last log line says what was given up.
   */
  async stop(): Promise<boolean> {
    if (this.stopping) return true;
    this.stopping = true;
    clearInterval(this.heartbeat);
    clearInterval(this.placement);
    const timeout = this.options.config.workers.shutdownTimeoutMs;
    const deadline = new Deadline(timeout + RELEASE_MS);
    const unreachable = (): boolean => this.redis?.status !== 'ready';
    await deadline.step('withdraw from the worker registry', this.registry?.withdraw(this.id), 1000);
    this.batcher?.flush();
    let closed = true;
    if (this.bulls.length) {
      // BullMQ's close waits for the jobs in hand and for Redis to record their outcome;
      // with Redis gone and nothing in hand, there is nothing to wait for.
      closed = await deadline.within(Promise.all(this.bulls.map((b) => b.close())), timeout, () => unreachable() && this.inHand.size === 0);
    }
    this.bullConnection?.disconnect();
    await Promise.all((this.laneQueues ?? []).map((q) => q.close().catch(() => {})));
    const jobsLeft = this.inHand.size;
    await deadline.step('pending model reload', this.control?.close());
    await deadline.step('inference threads', this.inference?.close());
    await deadline.step('drift counts', this.drift?.close(), Infinity, unreachable);
    await deadline.step('live stats', this.stats?.close(), Infinity, unreachable);
    const redis = unreachable() ? 'unreachable' : 'ready';
    (this.pubsub?.getSubscriber() as RedisClient | undefined)?.disconnect();
    this.redis?.disconnect();
    const dropped = [...(closed ? [] : ['queue connection']), ...deadline.dropped];
    if (jobsLeft > 0) {
      this.log.warn(
        { jobsLeftToStallRecovery: jobsLeft, redis, dropped, timeoutMs: timeout },
        `worker stopped, giving up on ${jobsLeft} job(s) in hand: their outcome is not recorded${redis === 'unreachable' ? ' and their results not written (Redis unreachable)' : ''}; stall recovery hands them to another worker once their locks expire`,
      );
      return false;
    }
    if (dropped.length) this.log.info({ redis, dropped }, `worker stopped with nothing in hand; gave up waiting on: ${dropped.join(', ')}`);
    else this.log.info('worker stopped');
    return true;
  }
}
