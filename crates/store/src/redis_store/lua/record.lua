-- Records a verified outcome (decision::record). KEYS: the attempt's counter keys.
-- ARGV[1]: now in ms, or '' to read Redis TIME. ARGV[2]: 'f' failure or 's' success.
-- ARGV[3]: the username's keyed hash. ARGV[3 + i]: the policy of KEYS[i].
-- ARGV[#KEYS + 4]: the restrictions index key.
-- Returns {i, until, ...}: the bans the failure started.
local now = now_ms(ARGV[1])
local failed = ARGV[2] == 'f'
local username = ARGV[3]
local index = ARGV[#KEYS + 4]
local bans = {}
for i, key in ipairs(KEYS) do
  local p = parse_policy(ARGV[i + 3])
  if failed and (p.fb > 0 or p.sm > 0 or p.aw > 0) then
    local s = load(key)
    if p.fb > 0 then
      s.ft = math.max(s.ft, now) + p.fi
    end
    if p.aw > 0 then
      attack_roll(s, p, now)
      s.af = s.af + 1
    end
    if p.sm > 0 then
      local until_ms = spray_on_failure(key, s, p, username, now)
      if until_ms then
        bans[#bans + 1] = i
        bans[#bans + 1] = until_ms
        index_restriction(index, key, until_ms, now)
      end
    end
    save(key, s, p, now)
  elseif not failed and p.resets == 1 and p.lmax > 0 then
    local s = load(key)
    if s.p ~= 1 then
      s.f, s.lf, s.lu, s.tl = 0, 0, 0, 0
      save(key, s, p, now)
    end
  end
end
return bans
