-- Creates a session. KEYS[1]: the session key, KEYS[2]: the account's session index.
-- ARGV[1]: now in ms or '', ARGV[2]: subject, ARGV[3]: ttl in ms, ARGV[4]: digest.
-- Returns the expiry in ms. The index lives as long as the account's longest session.
local now = now_ms(ARGV[1])
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'sub', ARGV[2], 'exp', int(now + ttl))
redis.call('PEXPIRE', KEYS[1], int(ttl))
redis.call('SADD', KEYS[2], ARGV[4])
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], int(ttl))
end
return now + ttl
