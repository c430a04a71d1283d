--[[
  Adds one API process's comparison figures of a version pair to the deployment's sums
  (core/rollout/comparisons.ts).

  KEYS[1] the pair's hash. ARGV[1] its TTL in seconds, then triples: an operation ('+' adds
  the value to the field, 'max' keeps the larger of the two), a field, a value.
  One script, so that a maximum is never lost between reading it and writing it back.
]]
for i = 2, #ARGV, 3 do
  local field, value = ARGV[i + 1], tonumber(ARGV[i + 2])
  if ARGV[i] == '+' then
    redis.call('HINCRBYFLOAT', KEYS[1], field, value)
  else
    local current = tonumber(redis.call('HGET', KEYS[1], field))
    if current == nil or value > current then redis.call('HSET', KEYS[1], field, ARGV[i + 2]) end
  end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
