-- Shared by the counter functions (in one Redis Functions library, after the generated POLICIES
-- table: each dimension's policy by the field names of portcullis-core's `KeyPolicy`, plus
-- `resets_on_success`, `tightens_under_attack` and `is_source`; a limit that is off is absent;
-- and the CHALLENGE table, portcullis-core's `ChallengePolicy`). All of this runs once, when
-- the library loads; a call runs only its function.
-- The same maths as portcullis-core (gcra.rs, backoff.rs, decision.rs, challenge.rs); where they
-- disagree, the core is right and a differential test fails.
--
-- A key's state is one string, PACKED below: a format byte, then the FIELDS in order as
-- big-endian doubles (every value is an integer below 2^53, so exact); plus, while a spray
-- window is open, the set `<key>:sp` of those usernames' keyed hashes (at most the threshold of
-- them). One GET and one SET PX a key: far cheaper than a hash's 20 fields.

-- A permanently locked key still expires from Redis after this long (30 days).
local PERMANENT_RETENTION_MS = 2592000000

-- The state's fields, in their packed order (Rust decodes the same order: see
-- `redis_store::state`).
local FIELDS = {
  'attempt_tat', 'throttle_tat', 'failure_tat',
  'failures', 'last_failure', 'locked_until', 'temporary_lockouts', 'permanent', 'in_flight',
  'spray_count', 'spray_window_end', 'banned_until', 'bans', 'last_ban',
  'attack_window', 'attack_attempts', 'attack_failures', 'previous_attempts', 'previous_failures',
  'success_counted_until',
}

local PACKED_FORMAT = 1
-- A format byte and 20 doubles (library code runs with no `string` while it loads: a literal).
local PACKED = '>Bdddddddddddddddddddd'

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

local function policy_of(dimension)
  local p = POLICIES[dimension]
  if p == nil then
    error('unknown dimension ' .. tostring(dimension))
  end
  return p
end

-- Backoff::expires_at (nil: permanently locked)
local function lockout_expires_at(s, b)
  if s.permanent == 1 then
    return nil
  end
  local forgotten = 0
  if s.failures > 0 then
    forgotten = s.last_failure + b.failure_reset_ms
  end
  return math.max(forgotten, s.locked_until)
end

-- KeyState::expires_at: when the state becomes as good as fresh (nil: permanently locked).
local function expires_at(s, p)
  local lock = 0
  if p.lockout then
    lock = lockout_expires_at(s, p.lockout)
    if lock == nil then
      return nil
    end
  end
  local spray = 0
  if p.spray then
    if s.spray_count > 0 then spray = s.spray_window_end end
    if s.bans > 0 then spray = math.max(spray, s.last_ban + p.spray.level_reset_ms) end
    spray = math.max(spray, s.banned_until)
  end
  local attack = 0
  if p.attack and (s.attack_attempts > 0 or s.previous_attempts > 0) then
    attack = (s.attack_window + 2) * p.attack.window_ms
  end
  return math.max(s.attempt_tat, s.throttle_tat, s.failure_tat, lock, spray, attack,
    s.success_counted_until)
end

-- A key's state at `now`. As in the reference model (StateTable::state), a state past its
-- expiry reads as fresh, whether or not Redis has dropped the key yet.
-- A key's state as stored (all zeros when absent), expired or not. Spelled out field by field:
-- one table built at its final size costs half of filling one in a loop.
local function read(key)
  local raw = redis.call('GET', key)
  if raw then
    local format, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15, v16, v17,
      v18, v19, v20 = struct.unpack(PACKED, raw)
    if format == PACKED_FORMAT then
      return {
        attempt_tat = v1, throttle_tat = v2, failure_tat = v3, failures = v4, last_failure = v5,
        locked_until = v6, temporary_lockouts = v7, permanent = v8, in_flight = v9,
        spray_count = v10, spray_window_end = v11, banned_until = v12, bans = v13, last_ban = v14,
        attack_window = v15, attack_attempts = v16, attack_failures = v17, previous_attempts = v18,
        previous_failures = v19, success_counted_until = v20
      }
    end
  end
  return {
    attempt_tat = 0, throttle_tat = 0, failure_tat = 0, failures = 0, last_failure = 0,
    locked_until = 0, temporary_lockouts = 0, permanent = 0, in_flight = 0, spray_count = 0,
    spray_window_end = 0, banned_until = 0, bans = 0, last_ban = 0, attack_window = 0,
    attack_attempts = 0, attack_failures = 0, previous_attempts = 0, previous_failures = 0,
    success_counted_until = 0
  }
end

local function load(key, p, now)
  local s = read(key)
  local at = expires_at(s, p)
  if at ~= nil and at <= now then
    for _, name in ipairs(FIELDS) do s[name] = 0 end
  end
  return s
end

local function save(key, s, p, now)
  local at = expires_at(s, p) or (now + PERMANENT_RETENTION_MS)
  if at <= now then
    redis.call('DEL', key, key .. ':sp')
    return
  end
  -- Relative, so a test's injected clock and Redis' own clock need not agree.
  local packed = struct.pack(PACKED,
    PACKED_FORMAT, s.attempt_tat, s.throttle_tat, s.failure_tat, s.failures, s.last_failure,
    s.locked_until, s.temporary_lockouts, s.permanent, s.in_flight, s.spray_count,
    s.spray_window_end, s.banned_until, s.bans, s.last_ban, s.attack_window, s.attack_attempts,
    s.attack_failures, s.previous_attempts, s.previous_failures, s.success_counted_until)
  redis.call('SET', key, packed, 'PX', int(at - now))
  if s.spray_count > 0 then
    redis.call('PEXPIRE', key .. ':sp', int(at - now))
  end
end

-- Gcra::check: admitted and the new TAT, or refused and the wait.
local function gcra_check(tat, now, g)
  local new_tat = math.max(tat, now) + g.interval_ms
  local ahead = new_tat - now
  local tolerance = g.interval_ms * g.burst
  if ahead > tolerance then
    return false, ahead - tolerance
  end
  return true, new_tat
end

-- Backoff::wait_after
local function wait_after(b, failures)
  local max = math.max(b.max_failures, 1)
  local steps
  if b.strategy == 'multiple' then
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
  return math.min(b.wait_increment_ms * steps, b.max_wait_ms)
end

-- Backoff::locked_for
local function locked_for(s, b, now)
  if s.permanent == 1 then
    return math.max(b.max_wait_ms, 1)
  end
  if s.locked_until > now then
    return s.locked_until - now
  end
  return nil
end

-- Backoff::on_admission: updates s; returns nil, or 'temporary' / 'permanent'.
local function on_admission(s, b, now)
  if s.permanent == 1 then
    s.in_flight = s.in_flight + 1
    return nil
  end
  if s.failures > 0 and now - s.last_failure >= b.failure_reset_ms then
    s.failures, s.last_failure, s.locked_until, s.temporary_lockouts = 0, 0, 0, 0
    s.in_flight = 0
  end
  local previous = s.last_failure
  s.failures = s.failures + 1
  s.last_failure = now
  s.in_flight = s.in_flight + 1
  local wait = wait_after(b, s.failures) or 0
  if b.quick_login_check_ms > 0 and previous > 0 and now - previous < b.quick_login_check_ms then
    wait = math.max(wait, b.min_quick_login_wait_ms)
  end
  if wait == 0 then
    return nil
  end
  if b.permanent_after ~= nil and s.temporary_lockouts >= b.permanent_after then
    s.permanent = 1
    return 'permanent'
  end
  s.temporary_lockouts = s.temporary_lockouts + 1
  s.locked_until = math.max(s.locked_until, now + wait)
  return 'temporary'
end

-- Backoff::on_verified
local function on_verified(s)
  s.in_flight = math.max(s.in_flight - 1, 0)
end

-- Backoff::on_abandon: takes back one provisional failure and the lockout it started.
local function on_abandon(s, started)
  s.failures = math.max(s.failures - 1, 0)
  s.in_flight = math.max(s.in_flight - 1, 0)
  if started == 'temporary' then
    s.temporary_lockouts = math.max(s.temporary_lockouts - 1, 0)
    s.locked_until = 0
  elseif started == 'permanent' then
    s.permanent = 0
  end
end

-- Backoff::on_success
local function on_success(s, started)
  on_abandon(s, started)
  if s.permanent == 1 then
    return
  end
  local others = s.in_flight
  if others == 0 then
    s.last_failure = 0
  end
  s.failures, s.locked_until, s.temporary_lockouts, s.in_flight = others, 0, 0, others
end

-- Spray::ban_length
local function ban_length(sp, bans)
  local length = sp.first_ban_ms
  for _ = 1, bans do
    length = length * sp.ban_multiplier
    if length >= sp.max_ban_ms then
      break
    end
  end
  return math.min(length, sp.max_ban_ms)
end

-- Spray::on_failure: updates s and the set; returns when the ban it started ends, or nil.
local function spray_on_failure(key, s, sp, username, now)
  local set = key .. ':sp'
  if now >= s.spray_window_end then
    redis.call('DEL', set)
    s.spray_count = 0
    s.spray_window_end = now + sp.window_ms
  end
  if s.spray_count < sp.max_usernames and redis.call('SISMEMBER', set, username) == 0 then
    redis.call('SADD', set, username)
    s.spray_count = s.spray_count + 1
  end
  if s.spray_count < sp.max_usernames then
    return nil
  end
  if s.bans > 0 and now - s.last_ban >= sp.level_reset_ms then
    s.bans = 0
  end
  s.banned_until = math.max(s.banned_until, now + ban_length(sp, s.bans))
  s.bans = s.bans + 1
  s.last_ban = now
  redis.call('DEL', set)
  s.spray_count = 0
  s.spray_window_end = 0
  return s.banned_until
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
local function attack_roll(s, a, now)
  local window = math.floor(now / a.window_ms)
  if window == s.attack_window then
    return
  end
  if window == s.attack_window + 1 then
    s.previous_attempts, s.previous_failures = s.attack_attempts, s.attack_failures
  else
    s.previous_attempts, s.previous_failures = 0, 0
  end
  s.attack_window, s.attack_attempts, s.attack_failures = window, 0, 0
end

-- AttackSignal::under_attack, on a rolled state's counts
local function attack_under(attempts, failures, previous_attempts, previous_failures, a, now)
  local window = a.window_ms
  local overlap = window - now % window
  local weighted = attempts * window + previous_attempts * overlap
  local failed = failures * window + previous_failures * overlap
  return weighted >= a.min_attempts * window and weighted > 0
    and failed * 100 >= a.failure_percent * weighted
end

-- AttackSignal::roll then under_attack, on a copy: the state itself is not moved.
local function attack_under_at(s, a, now)
  local window = math.floor(now / a.window_ms)
  local attempts, failures = s.attack_attempts, s.attack_failures
  local previous_attempts, previous_failures = s.previous_attempts, s.previous_failures
  if window ~= s.attack_window then
    if window == s.attack_window + 1 then
      previous_attempts, previous_failures = attempts, failures
    else
      previous_attempts, previous_failures = 0, 0
    end
    attempts, failures = 0, 0
  end
  return attack_under(attempts, failures, previous_attempts, previous_failures, a, now)
end

-- AttackSignal::tighten on one rate limit (nil stays nil)
local function tightened(g, factor)
  if g == nil then return nil end
  return {burst = math.max(math.floor(g.burst / factor), 1), interval_ms = g.interval_ms * factor}
end

-- Whether the attempt with these dimensions came from a trusted device.
local function trusted(dims)
  for _, dimension in ipairs(dims) do
    if dimension == 'device' then return true end
  end
  return false
end

-- decision::count_in_signal, on the global key's state (nil when the policy has no signal);
-- `dims`: the attempt's dimensions (a trusted device's attempts are not counted).
local function count_in_signal(s, a, dims, failed, now)
  if s == nil or a == nil or trusted(dims) then return end
  attack_roll(s, a, now)
  s.attack_attempts = s.attack_attempts + 1
  if failed then
    s.attack_failures = s.attack_failures + 1
  end
end

-- challenge::share: part of whole in thousandths, capped at 1000.
local function share(part, whole)
  return math.min(math.floor(part * 1000 / math.max(whole, 1)), 1000)
end

-- challenge::required_work: the work the attempt must prove, or nil.
local function required_work(dims, states, policies, under_attack, now)
  local risk, trusted = 0, false
  for i, p in ipairs(policies) do
    local s = states[i]
    if p.is_source then
      if p.spray then
        local usernames = 0
        if now < s.spray_window_end then usernames = s.spray_count end
        risk = math.max(risk, share(usernames, p.spray.max_usernames))
      end
      if p.failures then
        local used = math.ceil(math.max(s.failure_tat - now, 0) / math.max(p.failures.interval_ms, 1))
        risk = math.max(risk, share(used, p.failures.burst))
      end
    end
    if dims[i] == 'device' then
      trusted = true
      local b = p.lockout
      if b then
        local failed = math.max(s.failures - s.in_flight, 0)
        if s.failures > 0 and now - s.last_failure >= b.failure_reset_ms then failed = 0 end
        risk = math.max(risk, share(failed, b.max_failures))
      end
    end
  end
  local c = CHALLENGE
  local risky = risk >= c.risk_percent * 10
  local challenged
  if c.mode == 'off' then
    challenged = false
  elseif c.mode == 'always' then
    challenged = true
  elseif trusted then
    -- A trusted device is judged on its own failures alone, under attack or not.
    challenged = risky
  else
    challenged = under_attack or risky
  end
  if not challenged then return nil end
  return c.min_work + math.floor((c.max_work - c.min_work) * risk / 1000)
end
