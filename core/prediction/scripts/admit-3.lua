--[[
  Admission to a queue, atomic across every API replica (core/prediction/queues.ts).

  KEYS[1] the queue's `wait` list, KEYS[2] its `prioritized` set (BullMQ's own keys),
  KEYS[3] our set of admissions still being added; on a cluster all three share the queue's
  hash tag, so the script touches one slot.
  ARGV[1] max depth, ARGV[2] now (ms), ARGV[3] this admission's token, ARGV[4] how long an
  admission may stay (ms).

  Returns -1 when admitted, else the depth that refused it. An admission counts from this
  script until its job is in the queue (briefly twice, never zero times), so concurrent
  admissions cannot all see room for one more; one left by a process that died ages out.
]]
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[4]))
local depth = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
if depth >= tonumber(ARGV[1]) then return depth end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return -1
