--[[
  Stores a model's live traffic policy only if nobody stored another since it was read
  (core/rollout/policies.ts): an admin's change and a gate's rollback never overwrite each other.

  KEYS[1] the model's policy key. ARGV[1] the revision the change was made over (0: none
  stored), ARGV[2] the new policy as JSON, or '' to delete the live policy.
  Returns -1 when stored, else the revision found (the caller reads again and retries).
]]
local current = redis.call('GET', KEYS[1])
local revision = 0
if current then revision = tonumber(cjson.decode(current).revision) or 0 end
if revision ~= tonumber(ARGV[1]) then return revision end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return -1
