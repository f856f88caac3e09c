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
  'held_by', 'held_failures', 'held_last_failure', 'held_locked_until', 'held_temporary_lockouts',
  'success_counted_until',
}

local PACKED_FORMAT = 2
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
  return math.max(s.attempt_tat, s.throttle_tat, s.failure_tat, lock, spray,
    s.success_counted_until)
end

-- A fresh state: every field 0. Spelled out field by field: one table built at its final size
-- costs half of filling one in a loop.
local function fresh()
  return {
    attempt_tat = 0, throttle_tat = 0, failure_tat = 0, failures = 0, last_failure = 0,
    locked_until = 0, temporary_lockouts = 0, permanent = 0, in_flight = 0, spray_count = 0,
    spray_window_end = 0, banned_until = 0, bans = 0, last_ban = 0, held_by = 0, held_failures = 0,
    held_last_failure = 0, held_locked_until = 0, held_temporary_lockouts = 0,
    success_counted_until = 0
  }
end

-- A key's state at `now`. As in the reference model (StateTable::state), a state past its
-- expiry reads as fresh, whether or not Redis has dropped the key yet; so does an absent key
-- or one in another format.
local function load(key, p, now)
  local raw = redis.call('GET', key)
  if not raw then return fresh() end
  local format, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15, v16, v17,
    v18, v19, v20 = struct.unpack(PACKED, raw)
  if format ~= PACKED_FORMAT then return fresh() end
  local s = {
    attempt_tat = v1, throttle_tat = v2, failure_tat = v3, failures = v4, last_failure = v5,
    locked_until = v6, temporary_lockouts = v7, permanent = v8, in_flight = v9,
    spray_count = v10, spray_window_end = v11, banned_until = v12, bans = v13, last_ban = v14,
    held_by = v15, held_failures = v16, held_last_failure = v17, held_locked_until = v18,
    held_temporary_lockouts = v19, success_counted_until = v20
  }
  local at = expires_at(s, p)
  if at ~= nil and at <= now then return fresh() end
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
    s.spray_window_end, s.banned_until, s.bans, s.last_ban, s.held_by, s.held_failures,
    s.held_last_failure, s.held_locked_until, s.held_temporary_lockouts, s.success_counted_until)
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

-- Backoff::on_admission: updates s; returns nil, or 'temporary' / 'permanent'. Remembers what
-- it changed, held by `stamp` (the attempt's), so release can take it back exactly.
local function on_admission(s, b, now, stamp)
  s.held_by, s.held_failures, s.held_last_failure = stamp, s.failures, s.last_failure
  s.held_locked_until, s.held_temporary_lockouts = s.locked_until, s.temporary_lockouts
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

-- Takes back the admission held by `stamp` (another slot refused the attempt or asked for a
-- challenge): exactly, when no admission has come since; as an abandoned attempt otherwise.
local function release_admission(s, stamp, started)
  if s.held_by ~= stamp then
    on_abandon(s, started)
    return
  end
  s.failures, s.last_failure = s.held_failures, s.held_last_failure
  s.locked_until, s.temporary_lockouts = s.held_locked_until, s.held_temporary_lockouts
  s.in_flight = math.max(s.in_flight - 1, 0)
  if started == 'permanent' then s.permanent = 0 end
  s.held_by = 0
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

-- AttackSignal::tighten on one rate limit (nil stays nil)
local function tightened(g, factor)
  if g == nil then return nil end
  return {burst = math.max(math.floor(g.burst / factor), 1), interval_ms = g.interval_ms * factor}
end

-- challenge::share: part of whole in thousandths, capped at 1000.
local function share(part, whole)
  return math.min(math.floor(part * 1000 / math.max(whole, 1)), 1000)
end

-- The risk of the attempt as these keys see it (challenge::required_work's maximum, over the
-- keys of this call).
local function risk_of(dims, states, policies, now)
  local risk = 0
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
      local b = p.lockout
      if b then
        local failed = math.max(s.failures - s.in_flight, 0)
        if s.failures > 0 and now - s.last_failure >= b.failure_reset_ms then failed = 0 end
        risk = math.max(risk, share(failed, b.max_failures))
      end
    end
  end
  return risk
end

-- ChallengePolicy::required: the work to prove at this risk, or nil.
local function work_for(risk, trusted, under_attack)
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
