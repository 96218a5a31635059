-- KEYS: msgs, unacked, delayed   ARGV: prefix, then (queue, id, body, "id|token") per message;
-- a body's first byte is its delivery property, \3 for one that was redelivered
-- Back to the head of the queue if still held with this token, or if already acknowledged
-- (stored again); a message held under another token (delivered again) is left alone.
local prefix = ARGV[1]
local woken = {}
for i = #ARGV - 3, 2, -4 do
  local queue, id = ARGV[i], ARGV[i + 1]
  if redis.call('ZREM', KEYS[2], ARGV[i + 3]) == 1 or redis.call('HEXISTS', KEYS[1], id) == 0 then
    local body = ARGV[i + 2]
    if string.byte(body, 1) == 3 then  -- it came back redelivered: it stays so (see claim.lua)
      redis.call('SADD', prefix .. ':redelivered', id)
      body = '\2' .. string.sub(body, 2)
    end
    redis.call('HSET', KEYS[1], id, queue .. '\n' .. body)
    redis.call('ZREM', KEYS[3], id)
    redis.call('LREM', qkey(prefix, queue), 0, id)
    redis.call('LREM', dkey(prefix, queue), 0, id)
    redis.call('RPUSH', qkey(prefix, queue), id)
    note_band(prefix, queue)
    wake(prefix, queue, woken)
  end
end
return 1
