-- KEYS: msgs, delayed, unacked   ARGV: prefix, count, visibility, token, queue...
-- Returns {next_eta or '', id1, stored1, id2, stored2, ...}; each is claimed as "id|token"
local msgs, delayed, unacked = KEYS[1], KEYS[2], KEYS[3]
local prefix, count, visibility = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local token = '|' .. ARGV[4]
local now = clock()
local woken = {}

-- Due delayed messages and claims whose worker stopped renewing them (the visibility
-- timeout) go back to the head of their queue; due ones earliest eta first.
local function requeue(zset, members, reverse)
  if #members == 0 then return end
  local ids = {}
  for i, member in ipairs(members) do ids[i] = id_of(member) end
  local stored = redis.call('HMGET', msgs, unpack(ids))
  local from, to, step = 1, #ids, 1
  if reverse then from, to, step = #ids, 1, -1 end
  for i = from, to, step do
    if stored[i] then
      local queue = queue_of(stored[i])
      redis.call('RPUSH', qkey(prefix, queue), ids[i])
      wake(prefix, queue, woken)
    end
  end
  redis.call('ZREM', zset, unpack(members))
end
requeue(delayed, redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000), true)
requeue(unacked, redis.call('ZRANGEBYSCORE', unacked, '-inf', now, 'LIMIT', 0, 1000), false)

local out = {''}
local taken = 0
local deadline = now + visibility
for i = 5, #ARGV do
  if taken >= count then break end
  local q = qkey(prefix, ARGV[i])
  while taken < count do
    local ids = redis.call('RPOP', q, count - taken)
    if not ids then break end
    local stored = redis.call('HMGET', msgs, unpack(ids))
    local claims = {}
    for j, id in ipairs(ids) do
      if stored[j] then  -- an id without a body was acknowledged meanwhile: skip it
        claims[#claims + 1] = deadline
        claims[#claims + 1] = id .. token
        out[#out + 1] = id
        out[#out + 1] = stored[j]
        taken = taken + 1
      end
    end
    if #claims > 0 then redis.call('ZADD', unacked, unpack(claims)) end
  end
end

-- Work left behind: leave a token so another idle worker wakes for it.
for i = 5, #ARGV do
  if redis.call('LLEN', qkey(prefix, ARGV[i])) > 0 then wake(prefix, ARGV[i], woken) end
end

local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if first[2] then out[1] = first[2] end
return out
