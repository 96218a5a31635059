-- KEYS: lease, settled, next, info, paused
-- ARGV: "holder|token", n_set, then (entry, settled or '', next or '', info) * n_set, then entries to remove
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  local entry, settled, nxt = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if settled ~= '' then redis.call('HSET', KEYS[2], entry, settled) end
  if nxt == '' then redis.call('ZREM', KEYS[3], entry) else redis.call('ZADD', KEYS[3], nxt, entry) end
  redis.call('HSET', KEYS[4], entry, ARGV[i + 3])
  i = i + 4
end
for j = i, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[j])
  redis.call('ZREM', KEYS[3], ARGV[j])
  redis.call('HDEL', KEYS[4], ARGV[j])
  redis.call('SREM', KEYS[5], ARGV[j])
end
return 1
