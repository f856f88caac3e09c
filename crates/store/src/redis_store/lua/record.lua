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
local bans = {}
for i, key in ipairs(KEYS) do
  local p = policy_of(ARGV[3 + 2 * i])
  local started = ARGV[4 + 2 * i]
  local touches = p.lockout ~= nil or (failed and (p.failures or p.spray or p.attack))
  if touches then
    local s = load(key, p, now)
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
    if failed and p.attack then
      attack_roll(s, p.attack, now)
      s.attack_failures = s.attack_failures + 1
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
