-- KEYS: msgs, delayed, unacked   ARGV: prefix, count, visibility, token, queue...
-- Returns {next_eta or '', id1, stored1, id2, stored2, ...}; each is claimed as "id|token"
local msgs, delayed, unacked = KEYS[1], KEYS[2], KEYS[3]
local prefix, count, visibility = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local token = '|' .. ARGV[4]
local now = clock()

-- Due delayed messages go to the head of their queue, earliest eta consumed first.
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
for i = #due, 1, -1 do
  local stored = redis.call('HGET', msgs, due[i])
  if stored then
    local queue = queue_of(stored)
    redis.call('RPUSH', qkey(prefix, queue), due[i])
    wake(prefix, queue)
  end
end
if #due > 0 then redis.call('ZREM', delayed, unpack(due)) end

-- Claims whose worker stopped renewing them go back to the head of their queue.
local expired = redis.call('ZRANGEBYSCORE', unacked, '-inf', now, 'LIMIT', 0, 1000)
for i = 1, #expired do
  local id = id_of(expired[i])
  local stored = redis.call('HGET', msgs, id)
  if stored then
    local queue = queue_of(stored)
    redis.call('RPUSH', qkey(prefix, queue), id)
    wake(prefix, queue)
  end
end
if #expired > 0 then redis.call('ZREM', unacked, unpack(expired)) end

local out = {''}
local taken = 0
local deadline = now + visibility
for i = 5, #ARGV do
  if taken >= count then break end
  local q = qkey(prefix, ARGV[i])
  while taken < count do
    local ids = redis.call('RPOP', q, count - taken)
    if not ids then break end
    for _, id in ipairs(ids) do
      local stored = redis.call('HGET', msgs, id)
      if stored then
        redis.call('ZADD', unacked, deadline, id .. token)
        out[#out + 1] = id
        out[#out + 1] = stored
        taken = taken + 1
      end
    end
  end
end

-- Work left behind: leave a token so another idle worker wakes for it.
for i = 5, #ARGV do
  if redis.call('LLEN', qkey(prefix, ARGV[i])) > 0 then wake(prefix, ARGV[i]) end
end

local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if first[2] then out[1] = first[2] end
return out
