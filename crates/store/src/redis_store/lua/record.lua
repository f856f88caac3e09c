-- Settles an admitted attempt on the keys of one call (decision::record and decision::abandon).
-- KEYS: its counter keys (those the outcome touches). ARGV[1]: now in ms, or '' to read Redis
-- TIME. ARGV[2]: 'success', 'failure' or 'abandoned'. ARGV[3]: the username's keyed hash.
-- ARGV[4]: the key text of the attempt's network (familiar::network_of; '' if none), which a
-- success makes familiar to the account. ARGV[3 + 2i]: the dimension of KEYS[i];
-- ARGV[4 + 2i]: the lockout its admission started on KEYS[i] ('temporary', 'permanent' or '').
-- Returns JSON: {"bans": [{"key": i, "until": ms}], "first_success": b}: the bans the outcome
-- started (absent when none); for a success on the account's username key, whether it is the
-- account's first in the under-attack signal's bucket (decision::record), so
-- the store counts it there.
local now = now_ms(ARGV[1])
local outcome = ARGV[2]
local username = ARGV[3]
local network = ARGV[4]
local failed = outcome == 'failure'
local signal = POLICIES.global.attack
local reply = {}
local bans = {}
local raws = values_of(KEYS)
for i = 1, #KEYS do
  local key = KEYS[i]
  local dimension = ARGV[3 + 2 * i]
  local started = ARGV[4 + 2 * i]
  local p = policy_of(dimension)
  local s = state_of(raws[i], p, now)
  if dimension == 'username' and outcome == 'success' and CHALLENGE.unfamiliar_networks and
      network ~= '' then
    remember_network(key, network, now)
  end
  if dimension == 'username' and outcome == 'success' and signal then
    reply.first_success = s.success_counted_until <= now
    if reply.first_success then
      local window = signal.bucket_ms
      s.success_counted_until = (floor(now / window) + 1) * window
    end
  end
  if p.lockout then
    if outcome == 'abandoned' then
      on_abandon(s, started)
    elseif outcome == 'success' and p.resets_on_success then
      on_success(s, started)
    else
      on_verified(s)
    end
  end
  if failed and p.failures then
    local tat = s.failure_tat
    if now > tat then tat = now end
    s.failure_tat = tat + p.failures.interval_ms
  end
  if failed and p.spray then
    local until_ms = spray_on_failure(key, s, p.spray, username, now)
    if until_ms then
      bans[#bans + 1] = {key = i, ['until'] = until_ms}
    end
  end
  save(key, s, p, now)
end
if #bans > 0 then
  reply.bans = bans
  return encode_json(reply)
end
if reply.first_success == nil then return '{}' end
return '{"first_success":' .. tostring(reply.first_success) .. '}'
