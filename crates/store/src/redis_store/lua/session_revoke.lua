-- Revokes one session (ARGV[1] = '1') or every session of its account (ARGV[1] = 'all').
-- KEYS[1]: the session key. ARGV[2]: the key prefix for sessions ('{p}:s:') and ARGV[3] for
-- indexes ('{p}:as:'); every key shares one hash tag, so all are local to this slot.
-- Returns how many live sessions ended.
local subject = redis.call('HGET', KEYS[1], 'sub')
if not subject then
  return 0
end
local index = ARGV[3] .. subject
if ARGV[1] ~= 'all' then
  local digest = string.sub(KEYS[1], string.len(ARGV[2]) + 1)
  redis.call('SREM', index, digest)
  return redis.call('DEL', KEYS[1])
end
local ended = 0
for _, digest in ipairs(redis.call('SMEMBERS', index)) do
  ended = ended + redis.call('DEL', ARGV[2] .. digest)
end
redis.call('DEL', index)
return ended
