-- Lists current lockouts and bans from the restrictions index (KEYS[1]), dropping expired
-- entries and keys an unlock or a success has cleared. ARGV[1]: now in ms or '', ARGV[2]: limit.
-- Returns JSON: {"restrictions": [{"key": k, "until": ms}]}; until is absent for a permanent
-- lockout.
local now = now_ms(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now))
local out = {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  local s = read(key)
  local lu, p, sb = s.locked_until, s.permanent, s.banned_until
  if p == 1 then
    out[#out + 1] = {key = key}
  elseif lu > now or sb > now then
    out[#out + 1] = {key = key, ['until'] = math.max(lu, sb)}
  else
    redis.call('ZREM', KEYS[1], key)
  end
end
if #out == 0 then return cjson.encode({}) end
return cjson.encode({restrictions = out})
