-- fixed_window (sim/policies/limits.py FixedWindow.admit): a count per epoch-aligned window.
-- KEYS[1] hash {w, n}; ARGV[4] limit, ARGV[5] window_s, ARGV[6] epoch.
local key = KEYS[1]
local limit, window, epoch = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local w = math.floor((epoch + now) / window)
local s = redis.call('HMGET', key, 'w', 'n')
local n = 0
if s[1] and tonumber(s[1]) == w then n = tonumber(s[2]) end
local reset = (w + 1) * window - (epoch + now)
if n >= limit then
  redis.call('HSET', key, 'w', fmt(w), 'n', n)
  expire(key, reset)
  return reply(false, 'rate_limited', reset, limit, 0, reset)
end
redis.call('HSET', key, 'w', fmt(w), 'n', n + 1)
expire(key, reset)  -- the next window starts from 0, as a missing key does
return reply(true, nil, nil, limit, limit - n - 1, reset)
