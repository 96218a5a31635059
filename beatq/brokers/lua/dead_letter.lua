-- KEYS: unacked, msgs, dead, dead_reason, dead_index
-- ARGV: "id|token", id, "queue\nbody", reason, time
-- Only a live claim moves its message to the dead letters.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[2])
return 1
