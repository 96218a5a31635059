-- KEYS: msgs, unacked, delayed   ARGV: prefix, then (queue, id, body) per message
-- Back to the head of the queue, whether still claimed or already acknowledged.
local prefix = ARGV[1]
for i = #ARGV - 2, 2, -3 do
  local queue, id = ARGV[i], ARGV[i + 1]
  redis.call('HSET', KEYS[1], id, queue .. '\n' .. ARGV[i + 2])
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('LREM', qkey(prefix, queue), 0, id)
  redis.call('RPUSH', qkey(prefix, queue), id)
  wake(prefix, queue)
end
return 1
