-- Adds restricted keys to the restrictions index (KEYS[1], a sorted set scored by when each
-- restriction ends), which lives as long as its longest entry. ARGV[1]: now in ms, or ''.
-- ARGV[2i], ARGV[2i + 1]: a counter key and when its restriction ends ('permanent': kept as
-- long as a permanently locked key is). Returns JSON {}.
local now = now_ms(ARGV[1])
local index = KEYS[1]
for i = 2, #ARGV, 2 do
  local until_ms = ARGV[i + 1]
  if until_ms == 'permanent' then
    until_ms = now + PERMANENT_RETENTION_MS
  else
    until_ms = tonum(until_ms)
  end
  call('ZADD', index, until_ms, ARGV[i])
  local ttl = redis_ttl(until_ms - now)
  if call('PTTL', index) < ttl then
    call('PEXPIRE', index, ttl)
  end
end
return '{}'
