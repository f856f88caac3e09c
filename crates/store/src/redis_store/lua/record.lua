-- Settles an admitted attempt (decision::record and decision::abandon). KEYS: its counter keys.
-- ARGV[1]: now in ms, or '' to read Redis TIME. ARGV[2]: the restrictions index key.
-- ARGV[3]: 'success', 'failure' or 'abandoned'. ARGV[4]: the username's keyed hash.
-- ARGV[3 + 2i]: the dimension of KEYS[i]; ARGV[4 + 2i]: the lockout its admission started on
-- KEYS[i] ('temporary', 'permanent' or '').
-- Returns JSON: {"bans": [{"key": i, "until": ms}]} (absent when the outcome started none).
local now = now_ms(ARGV[1])
local index = ARGV[2]
local outcome = ARGV[3]
local username = ARGV[4]
local failed = outcome == 'failure'
local signal = POLICIES.global.attack

-- Load what the outcome touches: lockouts; on a failure the failure limits and spray; the signal
-- (every outcome may count in it); on a success the username key that remembers it counted.
local states, policies, touched, dims = {}, {}, {}, {}
local global, account = nil, nil
for i, key in ipairs(KEYS) do
  local dimension = ARGV[3 + 2 * i]
  dims[i] = dimension
  local p = policy_of(dimension)
  local is_account = dimension == 'username'
  if p.lockout ~= nil or p.attack ~= nil or (failed and (p.failures or p.spray))
      or (is_account and outcome == 'success') then
    states[i], policies[i], touched[i] = load(key, p, now), p, true
    if p.attack then global = states[i] end
    if is_account and account == nil then account = states[i] end
  end
end

-- decision::record / abandon: a failure or an abandoned attempt counts as a failed attempt; a
-- success once per account per window (first_success_in_window).
if outcome ~= 'success' then
  count_in_signal(global, signal, dims, true, now)
elseif signal and not trusted(dims) then
  local first = true
  if account then
    if account.success_counted_until > now then
      first = false
    else
      local window = signal.window_ms
      account.success_counted_until = (math.floor(now / window) + 1) * window
    end
  end
  if first then count_in_signal(global, signal, dims, false, now) end
end

local bans = {}
for i, key in ipairs(KEYS) do
  if touched[i] then
    local s, p = states[i], policies[i]
    local started = ARGV[4 + 2 * i]
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
      s.failure_tat = math.max(s.failure_tat, now) + p.failures.interval_ms
    end
    if failed and p.spray then
      local until_ms = spray_on_failure(key, s, p.spray, username, now)
      if until_ms then
        bans[#bans + 1] = {key = i, ['until'] = until_ms}
        index_restriction(index, key, until_ms, now)
      end
    end
    save(key, s, p, now)
  end
end
if #bans == 0 then return cjson.encode({}) end
return cjson.encode({bans = bans})
