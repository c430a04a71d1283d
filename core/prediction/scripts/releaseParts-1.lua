--[[
  A coalesced job's predictions stop counting against `queue.maxDepth` (admit-5.lua):
  all of them when a worker takes the job, one when a part of it is cancelled.

  KEYS[1] the queue's hash of predictions beyond the first of each waiting job (its slot).
  ARGV[1] the job's id, ARGV[2] how many to release (`all`, or a count).

  Returns the count the job had before (0: none beyond its first, or already taken).
]]
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n <= 0 then return 0 end
local release = n
if ARGV[2] ~= 'all' then release = math.min(n, tonumber(ARGV[2])) end
if release >= n then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HINCRBY', KEYS[1], ARGV[1], -release) end
redis.call('HINCRBY', KEYS[1], '#sum', -release)
return n
