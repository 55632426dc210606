-- sliding_log (sim/policies/limits.py SlidingLog.admit): pass if fewer than limit passed in
-- the last window_s. KEYS[1] list of the times that passed, oldest first (the Python ring);
-- ARGV[4] limit, ARGV[5] window_s.
local key = KEYS[1]
local limit, window = tonumber(ARGV[4]), tonumber(ARGV[5])
while true do
  local h = redis.call('LINDEX', key, 0)
  if not h or tonumber(h) > now - window then break end
  redis.call('LPOP', key)
end
local n = redis.call('LLEN', key)
if n >= limit then
  local wait = window
  if n > 0 then wait = tonumber(redis.call('LINDEX', key, 0)) + window - now end
  return reply(false, 'rate_limited', wait, limit, 0, wait)
end
redis.call('RPUSH', key, fmt(now))
expire(key, window)  -- the newest time leaves the window then, and the key with it
return reply(true, nil, nil, limit, limit - n - 1, nil)
