--[[
  Stores a prediction's final record and publishes it, unless a final record is there
  already (core/prediction/result-store.ts): a job run again after a crash, or a deadline
  racing a worker, is answered exactly once.

  KEYS[1] the record, KEYS[2] its result channel; on a cluster both carry the prediction's
  hash tag, so the write and the publish happen on the one master that owns them.
  ARGV[1] the record (JSON), ARGV[2] its TTL (s), ARGV[3] the publish command: PUBLISH on one
  Redis, SPUBLISH (sharded) on a cluster.

  Returns 1 when written and published, 0 when the prediction was already final.
]]
local current = redis.call('GET', KEYS[1])
if current then
  -- The stored record's own status field, decoded: no pattern can match inside a result.
  local ok, record = pcall(cjson.decode, current)
  local status = ok and type(record) == 'table' and record.status or nil
  if status == 'COMPLETED' or status == 'FAILED' or status == 'CANCELLED' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call(ARGV[3], KEYS[2], ARGV[1])
return 1
