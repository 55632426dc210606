-- sliding_counter (sim/policies/limits.py SlidingCounter.admit): estimate = this window's
-- count + the previous one's x the share of it still inside. KEYS[1] hash {w, c, p};
-- ARGV[4] limit, ARGV[5] window_s, ARGV[6] epoch.
local key = KEYS[1]
local limit, window, epoch = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local x = (epoch + now) / window
local w = math.floor(x)
local s = redis.call('HMGET', key, 'w', 'c', 'p')
local win, cur, prev = w, 0, 0
if s[1] then win, cur, prev = tonumber(s[1]), tonumber(s[2]), tonumber(s[3]) end
if w == win + 1 then
  prev, cur = cur, 0
elseif w ~= win then
  prev, cur = 0, 0
end
local est = cur + prev * (1.0 - (x - w))
-- two windows on, both counts are 0, as for a missing key
local ttl = (w + 2 - x) * window
if est >= limit then
  redis.call('HSET', key, 'w', fmt(w), 'c', cur, 'p', prev)
  expire(key, ttl)
  local wait = (w + 1 - x) * window
  return reply(false, 'rate_limited', wait, limit, 0, wait)
end
redis.call('HSET', key, 'w', fmt(w), 'c', cur + 1, 'p', prev)
expire(key, ttl)
return reply(true, nil, nil, limit, math.max(0, trunc(limit - est - 1)), nil)
