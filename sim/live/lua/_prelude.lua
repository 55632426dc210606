-- Prepended to every limiter script by sim/live/redis_store.py (one definition of the clock,
-- the number format and the expiry rule). Each script is one atomic call on one key.
-- ARGV[1] now in store seconds ('' = Redis TIME), ARGV[2] origin (unix time of t = 0),
-- ARGV[3] store seconds per wall second; the limiter's parameters from ARGV[4].
--
-- Numbers leave as strings: Redis turns a Lua number reply into an integer (3.7 -> 3), so
-- floats are formatted with %.17g, which a double survives exactly. State is stored the same
-- way (tostring keeps only 14 digits), so the script computes on the same doubles as Python.
local scale = tonumber(ARGV[3])
local now
if ARGV[1] == '' then
  -- production: one clock for every replica, whatever their own clocks say
  local t = redis.call('TIME')
  now = (tonumber(t[1]) + tonumber(t[2]) / 1e6 - tonumber(ARGV[2])) * scale
else
  now = tonumber(ARGV[1])
end

local function fmt(x)
  if x == nil then return false end  -- false -> a nil in the reply
  return string.format('%.17g', x)
end

-- Python's int(): toward zero
local function trunc(x)
  if x >= 0 then return math.floor(x) end
  return math.ceil(x)
end

-- The key vanishes `ttl` store seconds from now, when a missing key decides as its state
-- would (one wall millisecond of slack against rounding at the boundary).
local function expire(key, ttl)
  local ms = math.ceil(ttl / scale * 1000) + 1
  if ms < 1 then ms = 1 end
  redis.call('PEXPIRE', key, ms)
end

-- {ok, reason, retry_after, limit, remaining, reset_after}
local function reply(ok, reason, retry, limit, remaining, reset)
  return {ok and 1 or 0, reason or false, fmt(retry), fmt(limit), fmt(remaining), fmt(reset)}
end

-- The next double above x > 0 (Python's math.nextafter(x, inf) for positive normal x).
local function next_up(x)
  local _, e = math.frexp(x)
  return x + 2 ^ (e - 53)
end

-- sim/policies/quota.py wait_until: the smallest wait w >= at - now with now + w >= at in
-- float arithmetic, so a retry made at now + w is not an ulp before `at`.
local function wait_until(now, at)
  local w = at - now
  while w > 0 and now + w < at do w = next_up(w) end
  return w
end

-- sim/policies/quota.py until_reset: the wait to the next 00:00 UTC that lands on or after it
-- on both clocks (t, and epoch + t).
local function until_reset(epoch, now)
  local x = epoch + now
  local reset = (math.floor(x / 86400.0) + 1.0) * 86400.0
  local w = wait_until(now, reset - epoch)
  while epoch + (now + w) < reset do w = next_up(w) end
  return w
end
