-- token_bucket (sim/policies/limits.py TokenBucket.admit): starts full, refills at rate,
-- never above burst; a request costs 1. KEYS[1] hash {tokens, last}; ARGV[4] rate, ARGV[5] burst.
local key = KEYS[1]
local rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local EPS = 1e-9
local s = redis.call('HMGET', key, 'tokens', 'last')
local tokens, last
if s[2] then
  tokens, last = tonumber(s[1]), tonumber(s[2])
else  -- never seen, or expired once full: a full bucket
  tokens, last = burst, now
end
tokens = math.min(burst, tokens + (now - last) * rate)
if tokens >= 1.0 - EPS then
  local left = math.max(tokens - 1.0, 0.0)
  redis.call('HSET', key, 'tokens', fmt(left), 'last', fmt(now))
  expire(key, (burst - left) / rate)  -- full again: the state no longer matters
  return reply(true, nil, nil, trunc(burst), trunc(tokens - 1.0), nil)
end
redis.call('HSET', key, 'tokens', fmt(tokens), 'last', fmt(now))
expire(key, (burst - tokens) / rate)
return reply(false, 'rate_limited', (1.0 - tokens) / rate, trunc(burst), 0, (burst - tokens) / rate)
