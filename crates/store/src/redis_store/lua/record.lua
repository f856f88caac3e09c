-- Records a verified outcome (decision::record). KEYS: the attempt's counter keys.
-- ARGV[1]: now in ms, or '' to read Redis TIME. ARGV[2]: 'f' failure or 's' success.
-- ARGV[2 + i]: the policy of KEYS[i]. Returns nothing.
local now = now_ms(ARGV[1])
local failed = ARGV[2] == 'f'
for i, key in ipairs(KEYS) do
  local p = parse_policy(ARGV[i + 2])
  if failed and p.fb > 0 then
    local s = load(key)
    s.ft = math.max(s.ft, now) + p.fi
    save(key, s, p, now)
  elseif not failed and p.resets == 1 and p.lmax > 0 then
    local s = load(key)
    if s.p ~= 1 then
      s.f, s.lf, s.lu, s.tl = 0, 0, 0, 0
      save(key, s, p, now)
    end
  end
end
return 0
