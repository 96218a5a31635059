-- KEYS: dead, dead_reason, dead_index, msgs, delayed
-- ARGV: prefix, forget ('1': results are kept here), id... (none: all)
-- With forget, the state stored when the message was dead-lettered (a FAILURE) goes too,
-- so a waiter waits for the new run rather than read that old outcome.
local prefix = ARGV[1]
local forget = ARGV[2] == '1'
local ids = {}
if #ARGV > 2 then
  for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
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
    if forget then redis.call('DEL', rkey(prefix, id), skey(prefix, id)) end
    moved[#moved + 1] = id
  end
end
return moved
