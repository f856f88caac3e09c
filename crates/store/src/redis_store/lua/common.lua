-- Shared by the counter functions (in one Redis Functions library, after the bound globals of
-- bind.lua and the generated tables: POLICIES, each dimension's policy by the field names of
-- portcullis-core's `KeyPolicy`, plus `resets_on_success`, `is_source`, `tightened` (its
-- limits under attack, `Policy::effective`, where they tighten), `rate` and `success` (which field
-- groups its states hold) and `layout` (its codec); a limit that is off is absent; CHALLENGE,
-- portcullis-core's `ChallengePolicy`; GROUPS and FORMAT_TAG, the packed layout of
-- `redis_store::state`). All of this runs once, when the library loads; a call runs only its
-- function.
-- The same maths as portcullis-core (gcra.rs, backoff.rs, decision.rs, challenge.rs); where they
-- disagree, the core is right and a differential test fails.
--
-- A key's state is one string: the field groups its dimension uses, packed by the layout's codec
-- (`redis_store::state` owns the layout); plus, while a spray window is open, the set `<key>:sp` of
-- those usernames' keyed hashes (at most the threshold of them). One MGET for a call's keys, and
-- one SET (with its expiry) a key. A state table holds only its layout's fields: code touches a
-- group's fields only where the policy has that group.

-- A permanently locked key still expires from Redis after this long (30 days).
local PERMANENT_RETENTION_MS = 2592000000

-- Integers as exact decimal strings in reply text (Lua numbers are doubles; never let them print
-- as 1.7e+12). Not needed for redis.call's arguments: it sends a number exactly.
local function int(n)
  return string.format('%d', n)
end

-- Whether this call's `now` is a test's injected clock (see now_ms and expiry).
local clock_injected = false

local function now_ms(arg)
  if arg ~= '' then
    clock_injected = true
    return tonum(arg)
  end
  clock_injected = false
  local t = call('TIME')
  return t[1] * 1000 + floor(t[2] / 1000)
end

-- A whole number's text, kept: for the small counts replies carry (a risk is 0 to 1000), so
-- most replies format nothing (printing a number costs more than a key's decision).
local count_texts = {}
local function count_text(n)
  local text = count_texts[n]
  if text == nil then
    text = int(n)
    if n >= 0 and n <= 1000 then count_texts[n] = text end
  end
  return text
end

-- How long Redis keeps a key that the caller's time needs for `ms` more. Under a test's
-- injected clock a minute more: that clock jumps and stands still while Redis' runs on, so a
-- slow machine must not expire in Redis what the test's time still holds. A key outliving its
-- state changes nothing: load reads the state's own expiry.
local INJECTED_CLOCK_SLACK_MS = 60000
local function redis_ttl(ms)
  if clock_injected then return ms + INJECTED_CLOCK_SLACK_MS end
  return ms
end

-- When a key expires from Redis, as the option and argument of SET (and, with 'PEXPIRE' for
-- 'PX', of the expire command): `at` rounded up to the second, absolute in Redis time (PXAT,
-- which is what Redis replicates a relative expiry as: SET PX costs a rewrite more), its text
-- kept for the other keys expiring in that second. Under a test's injected clock, relative (PX,
-- see redis_ttl), since that clock and Redis' need not agree.
local expiry_texts, expiry_count = {}, 0
local function expiry(at, now)
  if clock_injected then return 'PX', redis_ttl(at - now) end
  local second = ceil(at / 1000)
  local text = expiry_texts[second]
  if text == nil then
    -- Deadlines move on with the clock: start over rather than keep every second seen.
    if expiry_count >= 256 then expiry_texts, expiry_count = {}, 0 end
    text = int(second) .. '000'
    expiry_texts[second], expiry_count = text, expiry_count + 1
  end
  return 'PXAT', text
end

local function policy_of(dimension)
  local p = POLICIES[dimension]
  if p == nil then
    error('unknown dimension ' .. tostring(dimension))
  end
  return p
end

-- KeyState::expires_at: when the state becomes as good as fresh (nil: permanently locked).
-- Backoff::expires_at and the spray window's and ban level's ends, inline.
local function expires_at(s, p)
  local at = 0
  if p.rate then
    at = s.attempt_tat
    if s.throttle_tat > at then at = s.throttle_tat end
    if s.failure_tat > at then at = s.failure_tat end
  end
  local b = p.lockout
  if b then
    if s.permanent == 1 then return nil end
    if s.failures > 0 and s.last_failure + b.failure_reset_ms > at then
      at = s.last_failure + b.failure_reset_ms
    end
    if s.locked_until > at then at = s.locked_until end
  end
  local sp = p.spray
  if sp then
    if s.spray_count > 0 and s.spray_window_end > at then at = s.spray_window_end end
    if s.bans > 0 and s.last_ban + sp.level_reset_ms > at then at = s.last_ban + sp.level_reset_ms end
    if s.banned_until > at then at = s.banned_until end
  end
  if p.success and s.success_counted_until > at then at = s.success_counted_until end
  return at
end

-- A state packed in another layout (written under another policy, during a rolling deploy):
-- the groups it names, by field name; this layout's other fields fresh. Nil if it is no state.
local function decode_other(raw, layout)
  if #raw == 0 then return nil end
  local format = sunpack('>B', raw)
  local mask = format % 16 -- the low four bits (GROUP_BITS in state.rs)
  if format - mask ~= FORMAT_TAG then return nil end
  local size = 1
  for g = 1, #GROUPS do
    if floor(mask / GROUPS[g][1]) % 2 == 1 then size = size + 8 * #GROUPS[g][2] end
  end
  if #raw ~= size then return nil end
  local s, at = layout.fresh(), 2
  for g = 1, #GROUPS do
    local bit, fields = GROUPS[g][1], GROUPS[g][2]
    if floor(mask / bit) % 2 == 1 then
      local kept = floor(layout.mask / bit) % 2 == 1
      for f = 1, #fields do
        local v
        v, at = sunpack('>d', raw, at)
        if kept then s[fields[f]] = v end
      end
    end
  end
  return s
end

-- The state a key's value (`raw`, false if the key is absent) holds at `now`. As in the
-- reference model (StateTable::state), a state past its expiry reads as fresh, whether or not
-- Redis has dropped the key yet; so does an absent key or one in another format.
local function state_of(raw, p, now)
  local layout = p.layout
  if not raw then return layout.fresh() end
  local s = layout.decode(raw) or decode_other(raw, layout)
  if s == nil then return layout.fresh() end
  local at = expires_at(s, p)
  if at ~= nil and at <= now then return layout.fresh() end
  return s
end

-- The values of a call's keys, by index (false where absent): one MGET for them all, as each
-- command a function sends costs about as much as decoding a state.
local function values_of(keys)
  if #keys == 0 then return {} end -- (MGET needs a key)
  return call('MGET', unpack_list(keys))
end

local function save(key, s, p, now)
  local at = expires_at(s, p) or (now + PERMANENT_RETENTION_MS)
  if at <= now then
    if p.spray then call('DEL', key, key .. ':sp') else call('DEL', key) end
    return
  end
  local option, when = expiry(at, now)
  call('SET', key, p.layout.encode(s), option, when)
  if p.spray and s.spray_count > 0 then
    call(option == 'PXAT' and 'PEXPIREAT' or 'PEXPIRE', key .. ':sp', when)
  end
end

-- Gcra::check: admitted and the new TAT, or refused and the wait.
local function gcra_check(tat, now, g)
  if now > tat then tat = now end
  local new_tat = tat + g.interval_ms
  local ahead = new_tat - now
  local tolerance = g.interval_ms * g.burst
  if ahead > tolerance then
    return false, ahead - tolerance
  end
  return true, new_tat
end

-- Backoff::wait_after
local function wait_after(b, failures)
  local max = b.max_failures
  if max < 1 then max = 1 end
  local steps
  if b.strategy == 'multiple' then
    if failures < max or failures % max ~= 0 then
      return nil
    end
    steps = floor(failures / max)
  else
    if failures < max then
      return nil
    end
    steps = 1 + failures - max
  end
  local wait = b.wait_increment_ms * steps
  if wait > b.max_wait_ms then return b.max_wait_ms end
  return wait
end

-- Backoff::locked_for
local function locked_for(s, b, now)
  if s.permanent == 1 then
    if b.max_wait_ms < 1 then return 1 end
    return b.max_wait_ms
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
  -- Backoff::forgets
  local forgets
  if s.failures == 0 then
    forgets = s.locked_until <= now
  else
    forgets = now - s.last_failure >= b.failure_reset_ms
  end
  if forgets then
    s.failures, s.last_failure, s.locked_until, s.temporary_lockouts = 0, 0, 0, 0
    s.in_flight = 0
  end
  local previous = s.last_failure
  s.failures = s.failures + 1
  s.last_failure = now
  s.in_flight = s.in_flight + 1
  local wait = wait_after(b, s.failures) or 0
  if b.quick_login_check_ms > 0 and previous > 0 and now - previous < b.quick_login_check_ms then
    if b.min_quick_login_wait_ms > wait then wait = b.min_quick_login_wait_ms end
  end
  if wait == 0 then
    return nil
  end
  if b.permanent_after ~= nil and s.temporary_lockouts >= b.permanent_after then
    s.permanent = 1
    return 'permanent'
  end
  s.temporary_lockouts = s.temporary_lockouts + 1
  if now + wait > s.locked_until then s.locked_until = now + wait end
  return 'temporary'
end

-- Backoff::on_verified
local function on_verified(s)
  if s.in_flight > 0 then s.in_flight = s.in_flight - 1 end
end

-- Backoff::on_abandon: takes back one provisional failure and the lockout it started.
local function on_abandon(s, started)
  if s.failures > 0 then s.failures = s.failures - 1 end
  if s.in_flight > 0 then s.in_flight = s.in_flight - 1 end
  if started == 'temporary' then
    if s.temporary_lockouts > 0 then s.temporary_lockouts = s.temporary_lockouts - 1 end
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
  if s.in_flight > 0 then s.in_flight = s.in_flight - 1 end
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
  if length > sp.max_ban_ms then return sp.max_ban_ms end
  return length
end

-- Spray::on_failure: updates s and the set; returns when the ban it started ends, or nil.
local function spray_on_failure(key, s, sp, username, now)
  local set = key .. ':sp'
  if now >= s.spray_window_end then
    call('DEL', set)
    s.spray_count = 0
    s.spray_window_end = now + sp.window_ms
  end
  if s.spray_count < sp.max_usernames and call('SISMEMBER', set, username) == 0 then
    call('SADD', set, username)
    s.spray_count = s.spray_count + 1
  end
  if s.spray_count < sp.max_usernames then
    return nil
  end
  if s.bans > 0 and now - s.last_ban >= sp.level_reset_ms then
    s.bans = 0
  end
  local ban_end = now + ban_length(sp, s.bans)
  if ban_end > s.banned_until then s.banned_until = ban_end end
  s.bans = s.bans + 1
  s.last_ban = now
  call('DEL', set)
  s.spray_count = 0
  s.spray_window_end = 0
  return s.banned_until
end

-- The limits a key's policy `p` applies: tightened while under attack, where they tighten
-- (`Policy::effective`, generated as `p.tightened`).
local function limits_of(p, under_attack)
  if under_attack and p.tightened then return p.tightened end
  return p
end

-- challenge::share: part of whole in thousandths, capped at 1000.
local function share(part, whole)
  if whole < 1 then whole = 1 end
  local r = floor(part * 1000 / whole)
  if r > 1000 then return 1000 end
  return r
end

-- The risk of the attempt as these keys see it (challenge::asked's maximum, over the
-- first n keys of this call).
local function risk_of(n, dims, states, policies, now)
  local risk = 0
  for i = 1, n do
    local p, s = policies[i], states[i]
    if p.is_source then
      local sp, f = p.spray, p.failures
      if sp then
        local usernames = 0
        if now < s.spray_window_end then usernames = s.spray_count end
        local r = share(usernames, sp.max_usernames)
        if r > risk then risk = r end
      end
      if f then
        local ahead, interval = s.failure_tat - now, f.interval_ms
        if ahead < 0 then ahead = 0 end
        if interval < 1 then interval = 1 end
        local r = share(ceil(ahead / interval), f.burst)
        if r > risk then risk = r end
      end
    end
    if dims[i] == 'device' then
      local b = p.lockout
      if b then
        local failed = s.failures - s.in_flight
        if failed < 0 then failed = 0 end
        if s.failures > 0 and now - s.last_failure >= b.failure_reset_ms then failed = 0 end
        local r = share(failed, b.max_failures)
        if r > risk then risk = r end
      end
    end
  end
  return risk
end

-- ChallengePolicy::required: the work to prove at this risk, or nil.
local function work_for(risk, trusted, under_attack, unfamiliar)
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
    challenged = under_attack or risky or unfamiliar
  end
  if not challenged then return nil end
  return c.min_work + floor((c.max_work - c.min_work) * risk / 1000)
end

-- challenge::asked's `unfamiliar`: whether an attempt without a trusted device comes from
-- a `network` the account of this call (its username key among the first n `keys`) has not
-- logged in from (familiar.rs). Its familiar networks are the sorted set `<key>:fam`, network
-- by the end of its memory.
local function is_unfamiliar(keys, n, dims, network, trusted, now)
  if not CHALLENGE.unfamiliar_networks or trusted or network == '' then return false end
  for i = 1, n do
    if dims[i] == 'username' then
      local until_ms = call('ZSCORE', keys[i] .. ':fam', network)
      return not until_ms or tonumber(until_ms) <= now
    end
  end
  return false
end

-- FamiliarNetworks::remember on the username key `key`: a login succeeded from `network`.
local function remember_network(key, network, now)
  local set, until_ms = key .. ':fam', now + CHALLENGE.familiar_days * 86400000
  call('ZREMRANGEBYSCORE', set, '-inf', now)
  call('ZADD', set, until_ms, network)
  local excess = call('ZCARD', set) - MAX_FAMILIAR_NETWORKS
  if excess > 0 then call('ZREMRANGEBYRANK', set, 0, excess - 1) end
  -- Every other network's memory ends sooner.
  local option, when = expiry(until_ms, now)
  call(option == 'PXAT' and 'PEXPIREAT' or 'PEXPIRE', set, when)
end

-- attempt.lua's per-key arrays (dimension, policy, state), reused by every call rather than
-- built and collected per call: entries past a call's key count are an earlier call's, so
-- their readers loop to that count, never to `#`.
local attempt_dims, attempt_policies, attempt_states = {}, {}, {}
