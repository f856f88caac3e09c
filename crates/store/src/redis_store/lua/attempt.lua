-- Decides an attempt (decision::decide). KEYS: the attempt's counter keys.
-- ARGV[1]: now in ms, or '' to read Redis TIME. ARGV[1 + i]: the policy of KEYS[i].
-- ARGV[#KEYS + 2]: the restrictions index key.
-- Returns {1, i, reason, retry_ms} to refuse (reason 1 rate limited, 2 too many failures,
-- 3 locked out, 4 banned, 5 throttled; i the refusing key with the longest wait), or {0, under_attack, i, kind, until, ...}
-- to admit, with the lockouts the admission started (kind 1 temporary, 2 permanent).
local now = now_ms(ARGV[1])
local index = ARGV[#KEYS + 2]
local states, policies = {}, {}
-- First the service-wide signal: it decides how tight per-address limits are.
local under_attack, factor = 0, 1
for i, key in ipairs(KEYS) do
  local p = parse_policy(ARGV[i + 1])
  local s = load(key)
  if p.aw > 0 then
    local rolled = {aw = s.aw, aa = s.aa, af = s.af, apa = s.apa, apf = s.apf}
    attack_roll(rolled, p, now)
    if attack_under(rolled, p, now) then
      under_attack, factor = 1, p.afactor
    end
  end
  states[i], policies[i] = s, p
end
local deny = nil
for i, key in ipairs(KEYS) do
  local p, s = policies[i], states[i]
  if under_attack == 1 and p.tightens == 1 then
    tighten(p, factor)
  end
  local reason, wait = nil, 0
  local function refuse(r, w)
    if reason == nil or w > wait then
      reason, wait = r, w
    end
  end
  if p.sm > 0 and s.sb > now then
    refuse(4, s.sb - now)
  end
  if p.lmax > 0 then
    local w = locked_for(s, p, now)
    if w then refuse(3, w) end
  end
  if p.fb > 0 then
    local ok, w = gcra_check(s.ft, now, p.fb, p.fi)
    if not ok then refuse(2, w) end
  end
  if p.ab > 0 then
    local ok, v = gcra_check(s.at, now, p.ab, p.ai)
    if ok then s.at = v else refuse(1, v) end
  end
  if p.tb > 0 then
    local ok, v = gcra_check(s.tt, now, p.tb, p.ti)
    if ok then s.tt = v else refuse(5, v) end
  end
  if reason ~= nil then
    local retry = math.max(wait, 1)
    if deny == nil or wait > deny[4] then
      deny = {1, i, reason, retry}
    end
  end
end
if deny then
  return deny
end
local admitted = {0, under_attack}
for i, key in ipairs(KEYS) do
  local s, p = states[i], policies[i]
  if p.aw > 0 then
    attack_roll(s, p, now)
    s.aa = s.aa + 1
  end
  if p.lmax > 0 then
    local kind = on_failure(s, p, now)
    if kind then
      admitted[#admitted + 1] = i
      admitted[#admitted + 1] = kind
      admitted[#admitted + 1] = s.lu
      local until_ms = s.lu
      if kind == 2 then until_ms = now + PERMANENT_RETENTION_MS end
      index_restriction(index, key, until_ms, now)
    end
  end
  if p.ab > 0 or p.tb > 0 or p.lmax > 0 or p.aw > 0 then
    save(key, s, p, now)
  end
end
return admitted
