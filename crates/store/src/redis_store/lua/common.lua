-- Shared by the attempt and record scripts (prepended to each at build time).
-- The same maths as portcullis-core (gcra.rs, backoff.rs, decision.rs); where they disagree,
-- the core is right and a differential test fails.
--
-- A key's state is one hash: at (attempts TAT), tt (throttle TAT), ft (failures TAT), f (consecutive failures),
-- lf (last failure), lu (locked until), tl (temporary lockouts), p (1 = permanent),
-- sc (distinct usernames in the spray window), sw (window end), sb (banned until),
-- sn (bans so far), sl (last ban), aw/aa/af/apa/apf (the global key's attack window index,
-- attempts, failures, previous attempts, previous failures); plus, while a spray window is open, the set `<key>:sp` of
-- those usernames' keyed hashes (at most the threshold of them).
-- A key's policy arrives as one ARGV string of 26 numbers (0 = that limit is off):
-- attempts burst, attempts interval, failures burst, failures interval, lockout max failures,
-- strategy (0 multiple, 1 linear), wait increment, max wait, failure reset, quick-login check,
-- min quick-login wait, permanent after (-1 never), resets on success (1 or 0), spray max
-- usernames, spray window, first ban, ban multiplier, max ban, ban level reset, throttle
-- burst, throttle interval, attack window, attack min attempts, attack failure percent, attack
-- tighten factor, tightens under attack (1 or 0).

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
    sm = v[14], swin = v[15], sfirst = v[16], smult = v[17], smax = v[18], sreset = v[19],
    tb = v[20], ti = v[21],
    aw = v[22], amin = v[23], apct = v[24], afactor = v[25], tightens = v[26],
  }
end

local function load(key)
  local v = redis.call('HMGET', key, 'at', 'ft', 'f', 'lf', 'lu', 'tl', 'p',
    'sc', 'sw', 'sb', 'sn', 'sl', 'tt', 'aw', 'aa', 'af', 'apa', 'apf')
  return {
    at = tonumber(v[1]) or 0, ft = tonumber(v[2]) or 0, f = tonumber(v[3]) or 0,
    lf = tonumber(v[4]) or 0, lu = tonumber(v[5]) or 0, tl = tonumber(v[6]) or 0,
    p = tonumber(v[7]) or 0, sc = tonumber(v[8]) or 0, sw = tonumber(v[9]) or 0,
    sb = tonumber(v[10]) or 0, sn = tonumber(v[11]) or 0, sl = tonumber(v[12]) or 0,
    tt = tonumber(v[13]) or 0, aw = tonumber(v[14]) or 0, aa = tonumber(v[15]) or 0,
    af = tonumber(v[16]) or 0, apa = tonumber(v[17]) or 0, apf = tonumber(v[18]) or 0,
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
  local spray = 0
  if p.sm > 0 then
    -- Spray::expires_at
    if s.sc > 0 then spray = s.sw end
    if s.sn > 0 then spray = math.max(spray, s.sl + p.sreset) end
    spray = math.max(spray, s.sb)
  end
  local attack = 0
  if p.aw > 0 and (s.aa > 0 or s.apa > 0) then
    -- AttackSignal::expires_at
    attack = (s.aw + 2) * p.aw
  end
  return math.max(s.at, s.tt, s.ft, lock, spray, attack)
end

local function save(key, s, p, now)
  local at = expires_at(s, p) or (now + PERMANENT_RETENTION_MS)
  if at <= now then
    redis.call('DEL', key, key .. ':sp')
    return
  end
  redis.call('HSET', key, 'at', int(s.at), 'ft', int(s.ft), 'f', int(s.f), 'lf', int(s.lf),
    'lu', int(s.lu), 'tl', int(s.tl), 'p', int(s.p), 'sc', int(s.sc), 'sw', int(s.sw),
    'sb', int(s.sb), 'sn', int(s.sn), 'sl', int(s.sl), 'tt', int(s.tt), 'aw', int(s.aw),
    'aa', int(s.aa), 'af', int(s.af), 'apa', int(s.apa), 'apf', int(s.apf))
  -- Relative, so a test's injected clock and Redis' own clock need not agree.
  redis.call('PEXPIRE', key, int(at - now))
  if s.sc > 0 then
    redis.call('PEXPIRE', key .. ':sp', int(at - now))
  end
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

-- Spray::ban_length
local function ban_length(p, bans)
  local length = p.sfirst
  for _ = 1, bans do
    length = length * p.smult
    if length >= p.smax then
      break
    end
  end
  return math.min(length, p.smax)
end

-- Spray::on_failure: updates s and the set; returns when the ban it started ends, or nil.
local function spray_on_failure(key, s, p, username, now)
  local set = key .. ':sp'
  if now >= s.sw then
    redis.call('DEL', set)
    s.sc = 0
    s.sw = now + p.swin
  end
  if s.sc < p.sm and redis.call('SISMEMBER', set, username) == 0 then
    redis.call('SADD', set, username)
    s.sc = s.sc + 1
  end
  if s.sc < p.sm then
    return nil
  end
  if s.sn > 0 and now - s.sl >= p.sreset then
    s.sn = 0
  end
  s.sb = math.max(s.sb, now + ban_length(p, s.sn))
  s.sn = s.sn + 1
  s.sl = now
  redis.call('DEL', set)
  s.sc = 0
  s.sw = 0
  return s.sb
end

-- Adds a restricted key to the restrictions index (a sorted set scored by when the
-- restriction ends), which lives as long as its longest entry.
local function index_restriction(index, key, until_ms, now)
  redis.call('ZADD', index, int(until_ms), key)
  if redis.call('PTTL', index) < until_ms - now then
    redis.call('PEXPIRE', index, int(until_ms - now))
  end
end

-- AttackSignal::roll
local function attack_roll(s, p, now)
  local window = math.floor(now / p.aw)
  if window == s.aw then
    return
  end
  if window == s.aw + 1 then
    s.apa, s.apf = s.aa, s.af
  else
    s.apa, s.apf = 0, 0
  end
  s.aw, s.aa, s.af = window, 0, 0
end

-- AttackSignal::under_attack (on a rolled state)
local function attack_under(s, p, now)
  local window = p.aw
  local overlap = window - now % window
  local attempts = s.aa * window + s.apa * overlap
  local failures = s.af * window + s.apf * overlap
  return attempts >= p.amin * window and attempts > 0 and failures * 100 >= p.apct * attempts
end

-- AttackSignal::tighten, on a policy's three rate limits
local function tighten(p, factor)
  local function one(burst, interval)
    if burst == 0 then return 0, interval end
    return math.max(math.floor(burst / factor), 1), interval * factor
  end
  p.ab, p.ai = one(p.ab, p.ai)
  p.tb, p.ti = one(p.tb, p.ti)
  p.fb, p.fi = one(p.fb, p.fi)
end
