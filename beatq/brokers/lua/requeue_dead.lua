-- KEYS: dead, dead_reason, dead_index, msgs, delayed   ARGV: prefix, id... (none: all)
local prefix = ARGV[1]
local ids = {}
if #ARGV > 1 then
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', KEYS[3], 0, -1)
end
local moved = {}
local woken = {}
for _, id in ipairs(ids) do
  local stored = redis.call('HGET', KEYS[1], id)
  if stored then
    local queue = queue_of(stored)
    local body = string.sub(stored, #queue + 2)
    send_one(prefix, KEYS[4], KEYS[5], woken, queue, id, body, '')
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    moved[#moved + 1] = id
  end
end
return moved
