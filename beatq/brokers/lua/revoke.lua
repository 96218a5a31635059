-- KEYS: revoked (zset id -> when), revoked:term (set of ids to terminate)
-- ARGV: ttl seconds, terminate ('1' or ''), task ids...
-- Times are the server's clock, so every client's revocations sort on one clock.
local revoked, term = KEYS[1], KEYS[2]
local now = clock()
local old = redis.call('ZRANGEBYSCORE', revoked, '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, 1000)
if #old > 0 then
  redis.call('ZREM', revoked, unpack(old))
  redis.call('SREM', term, unpack(old))
end
for i = 3, #ARGV do
  redis.call('ZADD', revoked, now, ARGV[i])
  if ARGV[2] == '1' then redis.call('SADD', term, ARGV[i]) end
end
return tostring(now)
