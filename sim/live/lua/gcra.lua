-- gcra (sim/policies/limits.py Gcra.admit; redis-cell CL.THROTTLE): T = period/count,
-- tau = burst*T, one stored time (TAT). KEYS[1] string TAT; ARGV[4] count, ARGV[5] period_s,
-- ARGV[6] burst.
local key = KEYS[1]
local count, period, burst = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local EPS = 1e-9
local T = period / count
local tau = burst * T
local v = redis.call('GET', key)
local tat = now
if v then tat = math.max(tonumber(v), now) end
local allow_at = tat - tau
local limit = burst + 1
if now < allow_at - EPS * math.max(1.0, T) then
  return reply(false, 'rate_limited', allow_at - now, limit, 0, tat - now)
end
local new = tat + T
redis.call('SET', key, fmt(new))
expire(key, new - now)  -- once now passes the TAT, a missing key decides the same
local remaining = trunc(math.floor((now - new + tau + T) / T + 1e-9))
return reply(true, nil, nil, limit, math.max(0, remaining), new - now)
