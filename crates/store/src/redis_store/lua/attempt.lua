-- Decides an attempt (decision::decide). KEYS: the attempt's counter keys.
-- ARGV[1]: now in ms, or '' to read Redis TIME. ARGV[2]: the restrictions index key.
-- ARGV[3]: the work of the solved challenge it carries (0: none).
-- ARGV[3 + i]: the dimension of KEYS[i].
-- Returns JSON: {"refused": {"key": i, "reason": <Reason>, "retry_after_ms": n}} (i the refusing
-- key with the longest wait), {"challenged": {"work": n}}, or {"admitted": {"under_attack": b,
-- "pending": [{"key": i, "lockout": "temporary"|"permanent", "until": ms}]}} with the lockouts
-- the admission started.
local now = now_ms(ARGV[1])
local index = ARGV[2]
local proof_work = tonumber(ARGV[3])
local states, policies, dims = {}, {}, {}
-- First the service-wide signal: it decides how tight per-address limits are.
local under_attack, factor = false, 1
for i, key in ipairs(KEYS) do
  dims[i] = ARGV[3 + i]
  local p = policy_of(dims[i])
  local s = load(key, p, now)
  if p.attack and attack_under_at(s, p.attack, now) then
    under_attack, factor = true, p.attack.tighten_factor
  end
  states[i], policies[i] = s, p
end
local refused = nil
for i, _ in ipairs(KEYS) do
  local p, s = policies[i], states[i]
  local attempts, throttle, failures = p.attempts, p.throttle, p.failures
  if under_attack and p.tightens_under_attack then
    attempts, throttle, failures = tightened(attempts, factor), tightened(throttle, factor),
      tightened(failures, factor)
  end
  -- The key's longest wait and its reason (no closure: one per key per call adds up).
  local reason, wait = nil, 0
  if p.spray and s.banned_until > now then
    reason, wait = 'banned', s.banned_until - now
  end
  if p.lockout then
    local w = locked_for(s, p.lockout, now)
    if w and (reason == nil or w > wait) then reason, wait = 'locked_out', w end
  end
  if failures then
    local ok, w = gcra_check(s.failure_tat, now, failures)
    if not ok and (reason == nil or w > wait) then reason, wait = 'too_many_failures', w end
  end
  if attempts then
    local ok, v = gcra_check(s.attempt_tat, now, attempts)
    if ok then
      s.attempt_tat = v
    elseif reason == nil or v > wait then
      reason, wait = 'rate_limited', v
    end
  end
  if throttle then
    local ok, v = gcra_check(s.throttle_tat, now, throttle)
    if ok then
      s.throttle_tat = v
    elseif reason == nil or v > wait then
      reason, wait = 'throttled', v
    end
  end
  if reason ~= nil and (refused == nil or wait > refused.retry_after_ms) then
    refused = {key = i, reason = reason, retry_after_ms = math.max(wait, 1)}
  end
end
if refused then
  return cjson.encode({refused = refused})
end
-- The risk reads no field the rate checks above moved (attempt_tat, throttle_tat): it is judged
-- on the states from before this attempt, as in the core.
local work = required_work(dims, states, policies, under_attack, now)
if work ~= nil and proof_work < work then
  for i, key in ipairs(KEYS) do
    local s, p = states[i], policies[i]
    count_in_signal(s, p.attack, dims, true, now)
    if p.attempts or p.throttle or p.attack then
      save(key, s, p, now)
    end
  end
  return cjson.encode({challenged = {work = work}})
end
local pending = {}
for i, key in ipairs(KEYS) do
  local s, p = states[i], policies[i]
  if p.lockout then
    local kind = on_admission(s, p.lockout, now)
    if kind then
      pending[#pending + 1] = {key = i, lockout = kind, ['until'] = s.locked_until}
      local until_ms = s.locked_until
      if kind == 'permanent' then until_ms = now + PERMANENT_RETENTION_MS end
      index_restriction(index, key, until_ms, now)
    end
  end
  if p.attempts or p.throttle or p.lockout then
    save(key, s, p, now)
  end
end
local admitted = {under_attack = under_attack}
if #pending > 0 then admitted.pending = pending end
return cjson.encode({admitted = admitted})
