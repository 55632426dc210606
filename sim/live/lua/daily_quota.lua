-- daily_quota (sim/policies/quota.py DailyQuota.admit, and DailyQuota.left for what an
-- admitted request leaves). KEYS[1] per user; ARGV[4] limit, ARGV[5] 'calendar' | 'rolling',
-- ARGV[6] epoch.
-- calendar: hash {d, n}, a count per UTC day, reset at 00:00 UTC;
-- rolling: string TAT, GCRA with period 24 h (a limit of 3 gives one back every 8 h).
local key = KEYS[1]
local lim, mode, epoch = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local DAY = 86400.0
if mode == 'rolling' then
  if lim == 0 then return reply(false, 'quota_exceeded', DAY, lim, 0, nil) end
  local T = DAY / lim
  local tau = (lim - 1) * T
  local v = redis.call('GET', key)
  local tat = now
  if v then tat = math.max(tonumber(v), now) end
  if now < tat - tau - 1e-9 * T then  -- Python's EPS: tat is a sum of floats
    return reply(false, 'quota_exceeded', wait_until(now, tat - tau), lim, 0, nil)
  end
  redis.call('SET', key, fmt(tat + T))
  expire(key, tat + T - now)
  return reply(true, nil, nil, nil, nil, nil)  -- Python's ADMIT: no count to show
end
local x = epoch + now
local day = math.floor(x / DAY)
local s = redis.call('HMGET', key, 'd', 'n')
local n = 0
if s[1] and tonumber(s[1]) == day then n = tonumber(s[2]) end
local reset = until_reset(epoch, now)
if n >= lim then
  redis.call('HSET', key, 'd', fmt(day), 'n', n)
  expire(key, reset)
  return reply(false, 'quota_exceeded', reset, lim, 0, reset)
end
redis.call('HSET', key, 'd', fmt(day), 'n', n + 1)
expire(key, reset)  -- a new UTC day starts from 0, as a missing key does
return reply(true, nil, nil, lim, math.max(0, lim - n - 1), reset)
