/**
 * Server configuration: one documented type with defaults, read from a YAML file and from
 * `BATCHLINE_*` environment variables (env wins). The CLI, the config file and the
 * Kubernetes renderer all speak this shape.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { parseClusterSeeds } from '../redis/cluster.ts';

export type PoolName = 'cpu' | 'gpu';
export const POOLS: readonly PoolName[] = ['cpu', 'gpu'];

/** The values of each setting that takes one of a few words; the type and the check at start both read these. */
export const EXECUTION_PROVIDERS = ['auto', 'cpu', 'cuda', 'webgpu'] as const;
export const QUEUE_PLACEMENTS = ['any', 'model'] as const;
export const WEBGPU_LAYOUTS = ['NCHW', 'NHWC'] as const;
export const WEBGPU_VALIDATION_MODES = ['disabled', 'wgpuOnly', 'basic', 'full'] as const;
export const WEBGPU_BUFFER_CACHE_MODES = ['disabled', 'lazyRelease', 'simple', 'bucket'] as const;
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export const REQUEST_LOGS = ['all', 'errors', 'off'] as const;
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;

export interface BatchlineConfig {
  redis: {
    /** @defaultValue 'redis://127.0.0.1:6379' */
    url: string;
    /** Key prefix for every key batchline writes (BullMQ prefix included). @defaultValue 'batchline' */
    prefix: string;
    /**
     * A Redis Cluster to use instead of `url`: `redis+cluster://[user:password@]host:port,host:port`
     * (`rediss+cluster://` for TLS), or a bare `host:port,...` list that takes its credentials
     * from `url`. A few seed nodes are enough; the rest are discovered. Optional in code-built
     * configs, so that those written before it still type. @defaultValue '' (one Redis at `url`)
     */
    cluster?: string;
  };
  http: {
    /** @defaultValue '0.0.0.0' */
    host: string;
    /** @defaultValue 4000 */
    port: number;
    /** Largest request body accepted, in bytes. @defaultValue 1048576 */
    maxBodyBytes: number;
    /** Serve GraphiQL at /graphql. @defaultValue true */
    graphiql: boolean;
    /** Allow schema introspection. @defaultValue true */
    introspection: boolean;
    /** On shutdown, how long synchronous requests in flight may take to be answered. @defaultValue 10000 */
    drainMs: number;
    /**
     * graphql-ws: after a subscription's last result, the longest the server waits for the
     * client to show it has read it (its `pong` to a `ping` sent after it) or to complete the
     * subscription itself, before sending `complete`. Keeps the released graphql-ws client from
     * losing results when it unsubscribes inside `next` (docs/graphql-ws-client-double-release.md).
     * 0 sends `complete` at once. @defaultValue 1000
     */
    wsCompleteGraceMs: number;
    /**
     * Most client connections (HTTP, SSE and WebSocket together) this process serves. Past it,
     * a new connection's requests answer 503 SERVICE_UNAVAILABLE with `Retry-After` and its
     * WebSocket upgrade is refused with 503, while `/health`, `/ready` and `/metrics` still
     * answer on it; refusals count in `batchline_rejections_total`. 0 derives it from the
     * process's open-file limit, leaving room for Redis, files and the probes' own
     * connections (server/connection-cap.ts). @defaultValue 0
     */
    maxConnections: number;
  };
  /** The Open Inference Protocol's gRPC door (server/oip/grpc.ts); its REST door is on `http.port`. */
  grpc: {
    /** Port of `inference.GRPCInferenceService`; 0 turns gRPC off. @defaultValue 4001 */
    port: number;
    /** Largest gRPC message received or sent, in bytes. @defaultValue 4194304 */
    maxMessageBytes: number;
  };
  models: {
    /** Model repository folder, laid out `<model>/<version>/model.onnx`. @defaultValue 'models' */
    repository: string;
    /**
     * A YAML map of model name to settings that override its config.yaml (pool, batching),
     * as rendered from a Kubernetes ModelServer. @defaultValue '' (none)
     */
    overrides: string;
  };
  results: {
    /** How long results (and failures) stay readable by id. @defaultValue 3600 */
    ttlSeconds: number;
  };
  predict: {
    /** Deadline of a synchronous `predict`. @defaultValue 30000 */
    timeoutMs: number;
    /** Most rows in one request, whatever a model allows. @defaultValue 1024 */
    maxRows: number;
  };
  cache: {
    /** @defaultValue 10000 */
    maxEntries: number;
    /** Bytes of cached results (approximate, JSON length). @defaultValue 67108864 */
    maxBytes: number;
    /** @defaultValue 300000 */
    ttlMs: number;
  };
  queue: {
    /** Most jobs waiting in one pool before new work is refused with 503 (split evenly over its shards). @defaultValue 10000 */
    maxDepth: number;
    /**
     * BullMQ queues per pool. One queue lives in one hash slot, so on a cluster one shard is one
     * master's share of the work; more shards spread a pool's jobs (by prediction id) over the
     * masters. Workers consume every shard of their pool. Priorities hold within a shard, not
     * across shards. API and workers must agree on it.
     */
    shards: {
      /** @defaultValue 1 */
      cpu: number;
      /** @defaultValue 1 */
      gpu: number;
    };
    /**
     * Which worker takes a job. `any`: every worker consumes every shard of its pool. `model`:
     * the shards are lanes by model version (a version's jobs all go to one shard, its id chosen
     * to hash there), and each lane is consumed by its owner among the pool's live workers
     * (rendezvous hashing), plus one more worker per `concurrency` jobs waiting in it: a version
     * is loaded where its lane is, and a hot lane gets more workers (docs/RESIDENCY.md). Needs
     * `shards` above 1 to place anything; API and workers must agree on it. @defaultValue 'any'
     */
    placement: (typeof QUEUE_PLACEMENTS)[number];
  };
  workers: {
    /** Concurrent jobs per worker process; 0 derives it from cgroup CPU and memory limits. @defaultValue 0 */
    concurrency: number;
    /** Inference threads per worker process; 0 derives it. @defaultValue 0 */
    threads: number;
    /** onnxruntime intra-op threads per inference thread; 0 derives it. @defaultValue 0 */
    intraOpThreads: number;
    /**
     * `auto`: the gpu pool tries CUDA, then WebGPU, then CPU, and runs the first whose sessions
     * load and answer a warm-up run; the cpu pool runs on CPU. `cuda`, `webgpu` or `cpu` is used
     * in every pool the worker serves, and a worker whose provider cannot run stops at start
     * (unless `cpuFallback`). @defaultValue 'auto'
     */
    executionProvider: (typeof EXECUTION_PROVIDERS)[number];
    /** With an explicit `cuda` or `webgpu` that cannot run here: serve on CPU (one warning) instead of stopping at start. @defaultValue false */
    cpuFallback: boolean;
    /**
     * Options of onnxruntime's WebGPU execution provider (Dawn: Vulkan on Linux, D3D12 on
     * Windows, Metal on macOS). Graph capture is not among them: onnxruntime-node 1.30 does not
     * pass it on, and a captured graph replays one input shape while batches vary in size.
     */
    webgpu: {
      /** Layout of layout-sensitive operators (convolutions, pooling): `NCHW` or `NHWC`. Dense models are unaffected. @defaultValue 'NCHW' */
      preferredLayout: (typeof WEBGPU_LAYOUTS)[number];
      /** `basic` (onnxruntime's default: it also checks every dispatch of a run on the host), `wgpuOnly` (Dawn's validation only: a little less host CPU per run), `full` (debugging) or `disabled` (a WebGPU error may then crash the process). @defaultValue 'basic' */
      validationMode: (typeof WEBGPU_VALIDATION_MODES)[number];
      /** Reuse of GPU storage buffers between runs: `bucket` (by size class), `simple` (exact size: less GPU memory for fixed shapes), `lazyRelease` or `disabled`. @defaultValue 'bucket' */
      storageBufferCacheMode: (typeof WEBGPU_BUFFER_CACHE_MODES)[number];
    };
    /** How long a stopping worker waits for work in hand. @defaultValue 20000 */
    shutdownTimeoutMs: number;
    /** BullMQ job lock, renewed every half of it; jobs of a worker that died run again within about 1.5x this. @defaultValue 10000 */
    lockDurationMs: number;
    /** Port of a worker process's `/health`, `/ready` and `/metrics`; 0 serves none. @defaultValue 0 */
    httpPort: number;
    /**
     * Memory a worker may give to resident model versions (bytes, measured per version as it
     * loads; docs/RESIDENCY.md). With a budget, versions load on demand and the least recently
     * used idle ones are evicted to stay under it. 0 derives it: the container's memory limit
     * (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`) less a reserve of a quarter of it,
     * at least 256 MiB (`MODEL_MEMORY_RESERVE`), for Node, onnxruntime's arenas and batches in
     * flight; with no limit either, every version is loaded at start and kept. @defaultValue 0
     */
    modelMemoryBytes: number;
    /**
     * Most model loads a worker starts per second under a budget; 0: no cap. When the versions
     * asked for do not fit the budget together, each request for an evicted one loads it again:
     * the cap makes their jobs wait instead (resident versions keep serving), and says so in
     * `batchline_model_load_throttled_seconds_total` and a warning. @defaultValue 0
     */
    maxModelLoadsPerSecond: number;
    /**
     * Under a budget, a job for a version not in memory while other loads are in hand goes back
     * to the queue (delayed, promoted when its load ends) instead of holding a job slot that
     * jobs of resident versions could use (docs/RESIDENCY.md). @defaultValue true
     */
    deferColdJobs: boolean;
  };
  maintenance: {
    /** Run the periodic jobs' worker in this API process (exactly one process runs each tick). @defaultValue true */
    enabled: boolean;
    /** Cron (with seconds) of the model repository poll: new versions load without restart. @defaultValue '*\/10 * * * * *' */
    pollModels: string;
    /** Cron of expired result, failed job and cache housekeeping. @defaultValue '0 *\/5 * * * *' */
    housekeeping: string;
    /** Cron of the drift monitor. @defaultValue '0 * * * * *' */
    driftMonitor: string;
    /** Cron of the rollout gates' check: a canary that breaks its policy's gates is rolled back. @defaultValue '*\/5 * * * * *' */
    rolloutGates: string;
    /** Traffic window the drift monitor tests, in minutes. @defaultValue 60 */
    driftWindowMinutes: number;
    /** Fewest predictions in the window before a model is tested. @defaultValue 200 */
    driftMinSamples: number;
    /** p-value under which the predicted class mix is reported as drifted. @defaultValue 0.01 */
    driftAlpha: number;
  };
  auth: {
    /** Require an API key on every GraphQL request (not /health, /ready, /metrics). @defaultValue false */
    enabled: boolean;
    /**
     * API keys, hashed: `name:sha256hex:scope[,scope...]` entries separated by `;`. Scopes are
     * `predict:*`, `predict:<model>` and `admin`. Usually from the env (a Secret). @defaultValue ''
     */
    keys: string;
    /** Header carrying the key (`Authorization: Bearer <key>` is also read). @defaultValue 'x-api-key' */
    header: string;
  };
  limits: {
    /** Deepest selection allowed. @defaultValue 8 */
    maxDepth: number;
    /** Most aliases in one operation. @defaultValue 15 */
    maxAliases: number;
    /** Most tokens in one document. @defaultValue 5000 */
    maxTokens: number;
    /** Most cost (graphql-armor's cost limit). @defaultValue 5000 */
    maxCost: number;
    /** Requests per second per API key (or per client address without auth); 0 is off. @defaultValue 0 */
    rateLimitPerSecond: number;
    /** Requests a key may burst above its rate. @defaultValue 50 */
    rateLimitBurst: number;
    /** Longest wait for Redis's answer before a request is let through (the limiter fails open). @defaultValue 250 */
    rateLimitTimeoutMs: number;
  };
  log: {
    /** @defaultValue 'info' */
    level: (typeof LOG_LEVELS)[number];
    /** Also write JSON logs to this file, rotated daily. @defaultValue '' (off) */
    file: string;
    /** Days of rotated log files kept. @defaultValue 7 */
    retentionDays: number;
    /**
     * The API's line per request (operation, model, status, code, ms, request id) at `info`:
     * `all`, `errors` (status 400 and above) or `off`. @defaultValue 'all'
     */
    requests: (typeof REQUEST_LOGS)[number];
    /**
     * How stdout's lines look: `json` (one object a line, for collectors), `pretty` (one
     * human-readable line each, via pino-pretty) or `auto`: pretty when stdout is a terminal,
     * JSON otherwise. A `log.file` is JSON whatever this says. @defaultValue 'auto'
     */
    format: (typeof LOG_FORMATS)[number];
  };
  /**
   * OpenTelemetry tracing (core/telemetry/tracing.ts). The exporter, endpoint, protocol, sampler
   * and service name come from the standard `OTEL_*` variables; these say what they do not.
   */
  tracing: {
    /** Trace requests through the queue and the workers. `OTEL_SDK_DISABLED=true` turns it off too. @defaultValue false */
    enabled: boolean;
    /** Share of new traces sampled (a caller's sampled flag is followed) when OTEL_TRACES_SAMPLER_ARG is unset. @defaultValue 1 */
    samplingRatio: number;
  };
}

export const DEFAULT_CONFIG: BatchlineConfig = {
  redis: { url: 'redis://127.0.0.1:6379', prefix: 'batchline', cluster: '' },
  http: {
    host: '0.0.0.0',
    port: 4000,
    maxBodyBytes: 1_048_576,
    graphiql: true,
    introspection: true,
    drainMs: 10_000,
    wsCompleteGraceMs: 1000,
    maxConnections: 0,
  },
  grpc: { port: 4001, maxMessageBytes: 4 * 1024 * 1024 },
  models: { repository: 'models', overrides: '' },
  results: { ttlSeconds: 3600 },
  predict: { timeoutMs: 30_000, maxRows: 1024 },
  cache: { maxEntries: 10_000, maxBytes: 64 * 1024 * 1024, ttlMs: 300_000 },
  queue: { maxDepth: 10_000, shards: { cpu: 1, gpu: 1 }, placement: 'any' },
  workers: {
    concurrency: 0,
    threads: 0,
    intraOpThreads: 0,
    executionProvider: 'auto',
    cpuFallback: false,
    webgpu: { preferredLayout: 'NCHW', validationMode: 'basic', storageBufferCacheMode: 'bucket' },
    shutdownTimeoutMs: 20_000,
    lockDurationMs: 10_000,
    httpPort: 0,
    modelMemoryBytes: 0,
    maxModelLoadsPerSecond: 0,
    deferColdJobs: true,
  },
  maintenance: {
    enabled: true,
    pollModels: '*/10 * * * * *',
    housekeeping: '0 */5 * * * *',
    driftMonitor: '0 * * * * *',
    rolloutGates: '*/5 * * * * *',
    driftWindowMinutes: 60,
    driftMinSamples: 200,
    driftAlpha: 0.01,
  },
  auth: { enabled: false, keys: '', header: 'x-api-key' },
  limits: {
    maxDepth: 8,
    maxAliases: 15,
    maxTokens: 5000,
    maxCost: 5000,
    rateLimitPerSecond: 0,
    rateLimitBurst: 50,
    rateLimitTimeoutMs: 250,
  },
  log: { level: 'info', file: '', retentionDays: 7, requests: 'all', format: 'auto' },
  tracing: { enabled: false, samplingRatio: 1 },
};

/** The settings of one section: `section.key`, or `section.key.sub` for a setting that is a mapping of values (queue.shards). */
type SectionPaths<S extends string, T> = {
  [K in Extract<keyof T, string>]-?: NonNullable<T[K]> extends Record<string, unknown>
    ? `${S}.${K}.${Extract<keyof NonNullable<T[K]>, string>}`
    : `${S}.${K}`;
}[Extract<keyof T, string>];

/** A setting's place in {@link BatchlineConfig}: `section.key` (`section.key.sub` for queue.shards). */
export type ConfigPath = { [S in keyof BatchlineConfig]: SectionPaths<S, BatchlineConfig[S]> }[keyof BatchlineConfig];

/** The environment variable naming the YAML config file (it sets no setting itself). */
export const CONFIG_FILE_ENV = 'BATCHLINE_CONFIG';

/** Environment variables and the config path each sets. */
export const ENV_VARS = {
  BATCHLINE_REDIS_URL: 'redis.url',
  BATCHLINE_REDIS_PREFIX: 'redis.prefix',
  BATCHLINE_REDIS_CLUSTER: 'redis.cluster',
  BATCHLINE_HOST: 'http.host',
  BATCHLINE_PORT: 'http.port',
  BATCHLINE_MAX_BODY_BYTES: 'http.maxBodyBytes',
  BATCHLINE_GRAPHIQL: 'http.graphiql',
  BATCHLINE_INTROSPECTION: 'http.introspection',
  BATCHLINE_DRAIN_MS: 'http.drainMs',
  BATCHLINE_WS_COMPLETE_GRACE_MS: 'http.wsCompleteGraceMs',
  BATCHLINE_MAX_CONNECTIONS: 'http.maxConnections',
  BATCHLINE_GRPC_PORT: 'grpc.port',
  BATCHLINE_GRPC_MAX_MESSAGE_BYTES: 'grpc.maxMessageBytes',
  BATCHLINE_MODELS: 'models.repository',
  BATCHLINE_MODEL_OVERRIDES: 'models.overrides',
  BATCHLINE_RESULT_TTL_SECONDS: 'results.ttlSeconds',
  BATCHLINE_PREDICT_TIMEOUT_MS: 'predict.timeoutMs',
  BATCHLINE_MAX_ROWS: 'predict.maxRows',
  BATCHLINE_CACHE_MAX_ENTRIES: 'cache.maxEntries',
  BATCHLINE_CACHE_MAX_BYTES: 'cache.maxBytes',
  BATCHLINE_CACHE_TTL_MS: 'cache.ttlMs',
  BATCHLINE_QUEUE_MAX_DEPTH: 'queue.maxDepth',
  BATCHLINE_QUEUE_SHARDS_CPU: 'queue.shards.cpu',
  BATCHLINE_QUEUE_SHARDS_GPU: 'queue.shards.gpu',
  BATCHLINE_QUEUE_PLACEMENT: 'queue.placement',
  BATCHLINE_WORKER_CONCURRENCY: 'workers.concurrency',
  BATCHLINE_WORKER_THREADS: 'workers.threads',
  BATCHLINE_INTRA_OP_THREADS: 'workers.intraOpThreads',
  BATCHLINE_EXECUTION_PROVIDER: 'workers.executionProvider',
  BATCHLINE_CPU_FALLBACK: 'workers.cpuFallback',
  BATCHLINE_WEBGPU_LAYOUT: 'workers.webgpu.preferredLayout',
  BATCHLINE_WEBGPU_VALIDATION: 'workers.webgpu.validationMode',
  BATCHLINE_WEBGPU_BUFFER_CACHE: 'workers.webgpu.storageBufferCacheMode',
  BATCHLINE_SHUTDOWN_TIMEOUT_MS: 'workers.shutdownTimeoutMs',
  BATCHLINE_LOCK_DURATION_MS: 'workers.lockDurationMs',
  BATCHLINE_WORKER_HTTP_PORT: 'workers.httpPort',
  BATCHLINE_WORKER_MODEL_MEMORY: 'workers.modelMemoryBytes',
  BATCHLINE_WORKER_MAX_MODEL_LOADS: 'workers.maxModelLoadsPerSecond',
  BATCHLINE_WORKER_DEFER_COLD_JOBS: 'workers.deferColdJobs',
  BATCHLINE_MAINTENANCE: 'maintenance.enabled',
  BATCHLINE_POLL_MODELS_CRON: 'maintenance.pollModels',
  BATCHLINE_HOUSEKEEPING_CRON: 'maintenance.housekeeping',
  BATCHLINE_DRIFT_CRON: 'maintenance.driftMonitor',
  BATCHLINE_ROLLOUT_GATES_CRON: 'maintenance.rolloutGates',
  BATCHLINE_DRIFT_WINDOW_MINUTES: 'maintenance.driftWindowMinutes',
  BATCHLINE_DRIFT_MIN_SAMPLES: 'maintenance.driftMinSamples',
  BATCHLINE_DRIFT_ALPHA: 'maintenance.driftAlpha',
  BATCHLINE_AUTH: 'auth.enabled',
  BATCHLINE_API_KEYS: 'auth.keys',
  BATCHLINE_AUTH_HEADER: 'auth.header',
  BATCHLINE_MAX_DEPTH: 'limits.maxDepth',
  BATCHLINE_MAX_ALIASES: 'limits.maxAliases',
  BATCHLINE_MAX_TOKENS: 'limits.maxTokens',
  BATCHLINE_MAX_COST: 'limits.maxCost',
  BATCHLINE_RATE_LIMIT_PER_SECOND: 'limits.rateLimitPerSecond',
  BATCHLINE_RATE_LIMIT_BURST: 'limits.rateLimitBurst',
  BATCHLINE_RATE_LIMIT_TIMEOUT_MS: 'limits.rateLimitTimeoutMs',
  BATCHLINE_LOG_LEVEL: 'log.level',
  BATCHLINE_LOG_FILE: 'log.file',
  BATCHLINE_LOG_RETENTION_DAYS: 'log.retentionDays',
  BATCHLINE_LOG_REQUESTS: 'log.requests',
  BATCHLINE_LOG_FORMAT: 'log.format',
  BATCHLINE_TRACING: 'tracing.enabled',
  BATCHLINE_TRACING_SAMPLING_RATIO: 'tracing.samplingRatio',
} as const satisfies Record<string, ConfigPath>;

const ENV_OF = new Map<string, string>(Object.entries(ENV_VARS).map(([name, path]) => [path, name]));

/** The environment variable that sets `path` (what the Kubernetes renderer writes instead of spelling the name). */
export function envVarOf(path: ConfigPath): string {
  const name = ENV_OF.get(path);
  if (!name) throw new Error(`config: no environment variable sets '${path}'`);
  return name;
}

type Tree = Record<string, unknown>;

function isTree(v: unknown): v is Tree {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep-merges `over` into a copy of `base`, checking each leaf against the base's type. */
function merge(base: Tree, over: Tree, path: string): Tree {
  const out: Tree = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const at = path ? `${path}.${key}` : key;
    if (!(key in base)) throw new Error(`config: unknown setting '${at}'`);
    const current = base[key];
    if (isTree(current)) {
      if (!isTree(value)) throw new Error(`config: '${at}' must be a mapping`);
      out[key] = merge(current, value, at);
    } else {
      out[key] = coerce(value, current, at);
    }
  }
  return out;
}

function coerce(value: unknown, like: unknown, at: string): unknown {
  if (typeof like === 'number') {
    const n = typeof value === 'string' ? Number(value) : value;
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0)
      throw new Error(`config: '${at}' must be a non-negative number, got ${JSON.stringify(value)}`);
    return n;
  }
  if (typeof like === 'boolean') {
    if (typeof value === 'boolean') return value;
    if (value === 'true' || value === '1') return true;
    if (value === 'false' || value === '0') return false;
    throw new Error(`config: '${at}' must be true or false, got ${JSON.stringify(value)}`);
  }
  if (typeof value !== 'string') throw new Error(`config: '${at}' must be a string`);
  return value;
}

function fromEnv(env: NodeJS.ProcessEnv): Tree {
  const out: Tree = {};
  for (const [name, path] of Object.entries(ENV_VARS)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    const parts = path.split('.');
    const last = parts.pop()!;
    let at = out;
    for (const p of parts) at = (at[p] ??= {}) as Tree;
    at[last] = value;
  }
  return out;
}

/** A setting that takes one of a few words: anything else stops the process at start, naming the setting. */
function oneOf(path: ConfigPath, value: string, allowed: readonly string[]): void {
  if (allowed.includes(value)) return;
  const words = `${allowed.slice(0, -1).join(', ')} or ${allowed.at(-1)}`;
  throw new Error(`config: '${path}' must be ${words}, got '${value}'`);
}

/**
 * Reads the configuration: defaults, then the YAML file (`file` or `BATCHLINE_CONFIG`),
 * then environment variables, then `overrides` (from CLI flags).
 */
export function loadConfig(options: { file?: string; env?: NodeJS.ProcessEnv; overrides?: Tree } = {}): BatchlineConfig {
  const env = options.env ?? process.env;
  let tree: Tree = structuredClone(DEFAULT_CONFIG) as unknown as Tree;
  const file = options.file ?? env[CONFIG_FILE_ENV];
  if (file) {
    const parsed: unknown = parse(readFileSync(file, 'utf8'));
    if (parsed != null) {
      if (!isTree(parsed)) throw new Error(`config: ${file} must hold a mapping`);
      tree = merge(tree, parsed, '');
    }
  }
  tree = merge(tree, fromEnv(env), '');
  if (options.overrides) tree = merge(tree, options.overrides, '');
  const config = tree as unknown as BatchlineConfig;
  oneOf('workers.executionProvider', config.workers.executionProvider, EXECUTION_PROVIDERS);
  oneOf('queue.placement', config.queue.placement, QUEUE_PLACEMENTS);
  oneOf('workers.webgpu.preferredLayout', config.workers.webgpu.preferredLayout, WEBGPU_LAYOUTS);
  oneOf('workers.webgpu.validationMode', config.workers.webgpu.validationMode, WEBGPU_VALIDATION_MODES);
  oneOf('workers.webgpu.storageBufferCacheMode', config.workers.webgpu.storageBufferCacheMode, WEBGPU_BUFFER_CACHE_MODES);
  oneOf('log.level', config.log.level, LOG_LEVELS);
  oneOf('log.requests', config.log.requests, REQUEST_LOGS);
  oneOf('log.format', config.log.format, LOG_FORMATS);
  if (config.tracing.samplingRatio > 1)
    throw new Error(`config: 'tracing.samplingRatio' must be a ratio from 0 to 1, got ${config.tracing.samplingRatio}`);
  for (const pool of POOLS) {
    const n = config.queue.shards[pool];
    if (!Number.isInteger(n) || n < 1 || n > 256)
      throw new Error(`config: 'queue.shards.${pool}' must be an integer from 1 to 256, got ${n}`);
  }
  if (config.redis.cluster?.trim()) {
    // Throws a message naming the setting when the seeds do not parse.
    parseClusterSeeds(config.redis.cluster, config.redis.url);
    // The keys' hash tags are batchline's (core/redis/connection.ts); braces in the prefix would take their place.
    if (/[{}]/.test(config.redis.prefix))
      throw new Error(
        `config: 'redis.prefix' must not contain braces on a cluster (batchline adds the hash tags), got '${config.redis.prefix}'`,
      );
  }
  return config;
}
