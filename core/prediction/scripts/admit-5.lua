--[[
  Admission of a job's predictions to a queue, atomic across every API replica
  (core/prediction/queues.ts). `queue.maxDepth` counts predictions: a coalesced job of n
  submissions counts n.

  KEYS[1] the queue's `wait` list, KEYS[2] its `prioritized` set (BullMQ's own keys),
  KEYS[3] our set of admissions still being added (job id, scored by time), KEYS[4] our hash
  of the predictions beyond the first of each waiting coalesced job (job id: count, and their
  sum under `#sum`), KEYS[5] its `delayed` set (BullMQ's): a job a worker handed back while
  its version loads (`workers.deferColdJobs`, workers/prediction-worker.ts) waits there, and
  so does a retry in its backoff; each still counts, and a coalesced one its parts too (they
  stay in KEYS[4] until a worker processes the job). On a cluster all five share the queue's
  hash tag, so the script touches one slot.
  ARGV[1] max depth, ARGV[2] now (ms), ARGV[3] the job's id, ARGV[4] how long an admission
  may stay (ms), ARGV[5] predictions wanted, ARGV[6] the prefix of BullMQ's job keys.

  Returns { admitted, depth }: how many of the predictions wanted are admitted (the first
  ones, in order; 0 when the queue is full), and the depth found. An admission counts from
  this script until its job is in the queue (briefly twice, never zero times), so concurrent
  admissions cannot all see room; one left by a process that died ages out, with its count
  unless its job made it into the queue.
]]
local now = tonumber(ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[3], id)
  if redis.call('EXISTS', ARGV[6] .. id) == 0 then
    local n = tonumber(redis.call('HGET', KEYS[4], id) or '0')
    if n > 0 then
      redis.call('HDEL', KEYS[4], id)
      redis.call('HINCRBY', KEYS[4], '#sum', -n)
    end
  end
end
local depth = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
  + redis.call('ZCARD', KEYS[5]) + tonumber(redis.call('HGET', KEYS[4], '#sum') or '0')
local room = tonumber(ARGV[1]) - depth
if room <= 0 then return { 0, depth } end
local admitted = math.min(room, tonumber(ARGV[5]))
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
if admitted > 1 then
  redis.call('HSET', KEYS[4], ARGV[3], admitted - 1)
  redis.call('HINCRBY', KEYS[4], '#sum', admitted - 1)
end
return { admitted, depth }
