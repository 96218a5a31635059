-- KEYS: unacked, msgs, dead, dead_reason, dead_index
-- ARGV: "id|token", id, "queue\n\2body", reason, time
-- A live claim moves its message to the dead letters, and so does one whose message is no
-- longer stored (acknowledged in its claim); a message delivered again stays its new holder's.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 and redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[2])
return 1
