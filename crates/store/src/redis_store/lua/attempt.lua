-- Decides an attempt on the keys of one call: all of them (single_slot), or one slot's
-- (per_subject: the store combines the calls, see redis_store/mod.rs). decision::decide.
-- KEYS: counter keys. ARGV[1]: now in ms, or '' to read Redis TIME. ARGV[2]: the work of the
-- solved challenge it carries (0: none). ARGV[3]: '1' while the service is under attack.
-- ARGV[4]: '1' if the attempt comes from a trusted device (whichever call holds its key).
-- ARGV[5]: the attempt's stamp (its admissions are held by it, for release). ARGV[6]: the key
-- text of the attempt's network (familiar::network_of; '' if none). ARGV[6 + i]: the dimension
-- of KEYS[i].
-- Returns JSON:
-- - {"refused": {"key": i, "reason": <Reason>, "retry_after_ms": n}}: i the refusing key with the
--   longest wait; nothing changed;
-- - {"challenged": {"risk": r}}: these keys alone ask for more work than the proof carries;
--   counted against the rate limits only; with "unfamiliar": true when the network is new to
--   the account (also in "admitted", whose proof was enough);
-- - {"admitted": {"risk": r, "pending": [{"key": i, "lockout": "temporary"|"permanent",
--   "until": ms}]}}: counted, lockout admissions made (and the lockouts they started).
-- r: the risk these keys see, in thousandths.
local now = now_ms(ARGV[1])
local proof_work = tonum(ARGV[2])
local under_attack = ARGV[3] == '1'
local trusted = ARGV[4] == '1'
local stamp = tonum(ARGV[5])
local network = ARGV[6]
local n = #KEYS
local dims, policies, states = attempt_dims, attempt_policies, attempt_states
local raws = values_of(KEYS)
for i = 1, n do
  local dim = ARGV[6 + i]
  local p = policy_of(dim)
  dims[i], policies[i], states[i] = dim, p, state_of(raws[i], p, now)
end
-- The refusing key with the longest wait (the first on a tie), its reason and wait.
local refused_key, refused_reason, refused_wait = nil, nil, 0
for i = 1, n do
  local p, s = policies[i], states[i]
  local limits = limits_of(p, under_attack)
  local attempts, throttle, failures = limits.attempts, limits.throttle, limits.failures
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
  if reason ~= nil and (refused_key == nil or wait > refused_wait) then
    if wait < 1 then wait = 1 end
    refused_key, refused_reason, refused_wait = i, reason, wait
  end
end
-- Replies are spelled out: cjson and its tables cost more than the decision on a key.
if refused_key then
  return '{"refused":{"key":' .. count_text(refused_key) .. ',"reason":"' .. refused_reason ..
    '","retry_after_ms":' .. int(refused_wait) .. '}}'
end
-- The risk reads no field the rate checks above moved (attempt_tat, throttle_tat): it is judged
-- on the states from before this attempt, as in the core. The work grows with the risk, so if
-- these keys alone ask for more than the proof, the whole attempt does. (A risk is a whole
-- number of thousandths: it prints exactly.)
local risk = risk_of(n, dims, states, policies, now)
local unfamiliar = is_unfamiliar(KEYS, n, dims, network, trusted, now)
local work = work_for(risk, trusted, under_attack, unfamiliar)
-- The reply's fields after the risk.
local told = unfamiliar and ',"unfamiliar":true' or ''
if work ~= nil and proof_work < work then
  for i = 1, n do
    local p = policies[i]
    if p.attempts or p.throttle then
      save(KEYS[i], states[i], p, now)
    end
  end
  return '{"challenged":{"risk":' .. count_text(risk) .. told .. '}}'
end
local pending = nil
for i = 1, n do
  local s, p = states[i], policies[i]
  if p.lockout then
    local kind = on_admission(s, p.lockout, now, stamp)
    if kind then
      pending = pending or {}
      pending[#pending + 1] = {key = i, lockout = kind, ['until'] = s.locked_until}
    end
  end
  if p.attempts or p.throttle or p.lockout then
    save(KEYS[i], s, p, now)
  end
end
if pending then
  return encode_json({admitted = {risk = risk, pending = pending, unfamiliar = unfamiliar}})
end
return '{"admitted":{"risk":' .. count_text(risk) .. told .. '}}'
