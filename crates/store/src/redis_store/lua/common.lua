-- Shared by the attempt and record scripts (prepended to each at build time).
-- The same maths as portcullis-core (gcra.rs, backoff.rs, decision.rs); where they disagree,
-- the core is right and a differential test fails.
--
-- A key's state is one hash: at (attempts TAT), ft (failures TAT), f (consecutive failures),
-- lf (last failure), lu (locked until), tl (temporary lockouts), p (1 = permanent).
-- A key's policy arrives as one ARGV string of 13 numbers (0 = that limit is off):
-- attempts burst, attempts interval, failures burst, failures interval, lockout max failures,
-- strategy (0 multiple, 1 linear), wait increment, max wait, failure reset, quick-login check,
-- min quick-login wait, permanent after (-1 never), resets on success (1 or 0).

-- A permanently locked key still expires from Redis after this long (30 days).
local PERMANENT_RETENTION_MS = 2592000000

-- Integers as exact decimal strings (Lua numbers are doubles; never let them print as 1.7e+12).
local function int(n)
  return string.format('%d', n)
end

local function now_ms(arg)
  if arg ~= nil and arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function parse_policy(s)
  local v = {}
  for n in string.gmatch(s, '[^,]+') do
    v[#v + 1] = tonumber(n)
  end
  return {
    ab = v[1], ai = v[2], fb = v[3], fi = v[4],
    lmax = v[5], strategy = v[6], inc = v[7], max_wait = v[8], reset = v[9],
    quick = v[10], min_quick = v[11], perm = v[12], resets = v[13],
  }
end

local function load(key)
  local v = redis.call('HMGET', key, 'at', 'ft', 'f', 'lf', 'lu', 'tl', 'p')
  return {
    at = tonumber(v[1]) or 0, ft = tonumber(v[2]) or 0, f = tonumber(v[3]) or 0,
    lf = tonumber(v[4]) or 0, lu = tonumber(v[5]) or 0, tl = tonumber(v[6]) or 0,
    p = tonumber(v[7]) or 0,
  }
end

-- When the state becomes as good as fresh (nil: permanently locked). KeyState::expires_at.
local function expires_at(s, p)
  local lock = 0
  if p.lmax > 0 then
    if s.p == 1 then
      return nil
    end
    local forgotten = 0
    if s.f > 0 then
      forgotten = s.lf + p.reset
    end
    lock = math.max(forgotten, s.lu)
  end
  return math.max(s.at, s.ft, lock)
end

local function save(key, s, p, now)
  local at = expires_at(s, p) or (now + PERMANENT_RETENTION_MS)
  if at <= now then
    redis.call('DEL', key)
    return
  end
  redis.call('HSET', key, 'at', int(s.at), 'ft', int(s.ft), 'f', int(s.f), 'lf', int(s.lf),
    'lu', int(s.lu), 'tl', int(s.tl), 'p', int(s.p))
  -- Relative, so a test's injected clock and Redis' own clock need not agree.
  redis.call('PEXPIRE', key, int(at - now))
end

-- Gcra::check: admitted and the new TAT, or refused and the wait.
local function gcra_check(tat, now, burst, interval)
  local new_tat = math.max(tat, now) + interval
  local ahead = new_tat - now
  local tolerance = interval * burst
  if ahead > tolerance then
    return false, ahead - tolerance
  end
  return true, new_tat
end

-- Backoff::wait_after
local function wait_after(p, failures)
  local max = math.max(p.lmax, 1)
  local steps
  if p.strategy == 0 then
    if failures < max or failures % max ~= 0 then
      return nil
    end
    steps = math.floor(failures / max)
  else
    if failures < max then
      return nil
    end
    steps = 1 + failures - max
  end
  return math.min(p.inc * steps, p.max_wait)
end

-- Backoff::locked_for
local function locked_for(s, p, now)
  if s.p == 1 then
    return math.max(p.max_wait, 1)
  end
  if s.lu > now then
    return s.lu - now
  end
  return nil
end

-- Backoff::on_failure: updates s; returns nil, or 1 (temporary) / 2 (permanent).
local function on_failure(s, p, now)
  if s.p == 1 then
    return nil
  end
  if s.f > 0 and now - s.lf >= p.reset then
    s.f, s.lf, s.lu, s.tl = 0, 0, 0, 0
  end
  local previous = s.lf
  s.f = s.f + 1
  s.lf = now
  local wait = wait_after(p, s.f) or 0
  if p.quick > 0 and previous > 0 and now - previous < p.quick then
    wait = math.max(wait, p.min_quick)
  end
  if wait == 0 then
    return nil
  end
  if p.perm >= 0 and s.tl >= p.perm then
    s.p = 1
    return 2
  end
  s.tl = s.tl + 1
  s.lu = math.max(s.lu, now + wait)
  return 1
end
