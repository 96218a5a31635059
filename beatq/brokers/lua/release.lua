-- KEYS: msgs, unacked, delayed   ARGV: prefix, then (queue, id, body, "id|token") per message
-- Back to the head of the queue if still held with this token, or if already acknowledged
-- (stored again); a message held under another token (delivered again) is left alone.
local prefix = ARGV[1]
local woken = {}
for i = #ARGV - 3, 2, -4 do
  local queue, id = ARGV[i], ARGV[i + 1]
  if redis.call('ZREM', KEYS[2], ARGV[i + 3]) == 1 or redis.call('HEXISTS', KEYS[1], id) == 0 then
    redis.call('HSET', KEYS[1], id, queue .. '\n' .. ARGV[i + 2])
    redis.call('ZREM', KEYS[3], id)
    redis.call('LREM', qkey(prefix, queue), 0, id)
    redis.call('LREM', dkey(prefix, queue), 0, id)
    redis.call('RPUSH', qkey(prefix, queue), id)
    note_band(prefix, queue)
    wake(prefix, queue, woken)
  end
end
return 1
