-- concurrency (sim/live/store.py Leases.admit): at most limit leases in flight per key. KEYS[1]
-- zset of lease ids scored by expiry: a lease its replica never released (it died) is
-- reclaimed once it expires. ARGV[4] limit, ARGV[5] lease ttl (store seconds), ARGV[6] lease id.
local key = KEYS[1]
local limit, ttl, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
local n = redis.call('ZCARD', key)
if n >= limit then
  return reply(false, 'rate_limited', nil, limit, 0, nil)
end
redis.call('ZADD', key, fmt(now + ttl), lease)
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
expire(key, tonumber(last[2]) - now)  -- the last lease's expiry: then nothing is held
return reply(true, nil, nil, limit, limit - n - 1, nil)
