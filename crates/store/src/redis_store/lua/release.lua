-- Takes back what attempt.lua counted on the keys of one slot, after another slot refused the
-- attempt (ARGV[2] 'refused': the rate limits and the lockout admissions) or asked for a
-- challenge these keys did not ('challenged': the lockout admissions only; a challenged attempt
-- counts against rate limits). ARGV[1]: now in ms, or ''. ARGV[3]: '1' if the attempt was
-- decided under attack (the limits it was counted against were tightened). ARGV[4]: its stamp.
-- ARGV[5]: '1' if this slot admitted it (else it only counted the rate limits).
-- ARGV[4 + 2i]: the dimension of KEYS[i]; ARGV[5 + 2i]: the lockout its admission started there.
-- A rate limit's step is taken back by moving its TAT back one interval: the same decisions as
-- never having counted, whatever came in between. Returns JSON {}.
local now = now_ms(ARGV[1])
local refused = ARGV[2] == 'refused'
local under_attack = ARGV[3] == '1'
local stamp = tonum(ARGV[4])
local admitted = ARGV[5] == '1'
local raws = values_of(KEYS)
for i = 1, #KEYS do
  local key = KEYS[i]
  local p = policy_of(ARGV[4 + 2 * i])
  local s = state_of(raws[i], p, now)
  if refused then
    local limits = limits_of(p, under_attack)
    local attempts, throttle = limits.attempts, limits.throttle
    if attempts then
      s.attempt_tat = s.attempt_tat - attempts.interval_ms
      if s.attempt_tat < 0 then s.attempt_tat = 0 end
    end
    if throttle then
      s.throttle_tat = s.throttle_tat - throttle.interval_ms
      if s.throttle_tat < 0 then s.throttle_tat = 0 end
    end
  end
  if admitted and p.lockout then
    release_admission(s, stamp, ARGV[5 + 2 * i])
  end
  save(key, s, p, now)
end
return '{}'
