--[[
  finishOnce-2.lua for the predictions of one job at once (core/prediction/result-store.ts):
  each final record is stored and published unless a final record is there already, so a job
  run again after a crash answers nothing twice.

  KEYS[1..n] the records, KEYS[n+1..2n] their result channels; on a cluster the predictions of
  one job share a hash tag, so the script touches one slot.
  ARGV[1] the TTL (s), ARGV[2] the publish command (PUBLISH, or SPUBLISH on a cluster),
  ARGV[3..n+2] the records (JSON).

  Returns one 1 (written and published) or 0 (already final) per record.
]]
local n = #KEYS / 2
local out = {}
for i = 1, n do
  -- Written first and read back in one command (SET ... GET, Redis 6.2+): a record that was
  -- final already (the rare case: a cancel, or an earlier run of the job) is put back as it
  -- was, before anything else can see the script's work.
  local previous = redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ARGV[1], 'GET')
  local final = false
  if previous then
    local ok, record = pcall(cjson.decode, previous)
    local status = ok and type(record) == 'table' and record.status or nil
    final = status == 'COMPLETED' or status == 'FAILED' or status == 'CANCELLED'
  end
  if final then
    redis.call('SET', KEYS[i], previous, 'KEEPTTL')
    out[i] = 0
  else
    redis.call(ARGV[2], KEYS[n + i], ARGV[i + 2])
    out[i] = 1
  end
end
return out
