-- KEYS: msgs, delayed   ARGV: prefix, then (queue, id, body, eta) per message
-- The ready ones are pushed with one LPUSH per queue (1,000 ids at a time), in order.
local prefix, msgs, delayed = ARGV[1], KEYS[1], KEYS[2]
local woken, ready, queues = {}, {}, {}

local function ready_at_tail(queue, id)
  if not ready[queue] then
    ready[queue] = {}
    queues[#queues + 1] = queue
  end
  local ids = ready[queue]
  ids[#ids + 1] = id
  return #ids
end

-- The usual batch: fresh ids, each sent once. Then nothing is replaced, and what `store`
-- does one message at a time is done with one HSET and one ZADD (1,000 arguments at a
-- time): the same keys, values and wake-ups. False, having written nothing, for any other.
local function stored_fresh()
  local ids, seen = {}, {}
  for i = 3, #ARGV, 4 do
    local id = ARGV[i]
    if seen[id] then return false end
    seen[id] = true
    ids[#ids + 1] = id
  end
  for j = 1, #ids, 1000 do
    for _, found in ipairs(redis.call('HMGET', msgs, unpack(ids, j, math.min(j + 999, #ids)))) do
      if found then return false end
    end
  end
  local fields, etas, now, first = {}, {}, nil, nil
  for i = 2, #ARGV, 4 do
    local queue, id, eta = ARGV[i], ARGV[i + 1], ARGV[i + 3]
    fields[#fields + 1] = id
    fields[#fields + 1] = queue .. '\n' .. ARGV[i + 2]
    local delay = false
    if eta ~= '' then
      local at = tonumber(eta)
      now = now or clock()
      if at > now then
        delay = true
        if first == nil then  -- the earliest eta before this batch (false: none)
          local head = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
          first = head[2] and tonumber(head[2]) or false
        end
        etas[#etas + 1] = eta
        etas[#etas + 1] = id
        -- a new earliest eta: wake a worker so it shortens its wait
        if not first or at < first then
          wake(prefix, queue, woken)
          first = at
        end
      end
    end
    if not delay then ready_at_tail(queue, id) end
  end
  for j = 1, #fields, 1000 do
    redis.call('HSET', msgs, unpack(fields, j, math.min(j + 999, #fields)))
  end
  for j = 1, #etas, 1000 do
    redis.call('ZADD', delayed, unpack(etas, j, math.min(j + 999, #etas)))
  end
  return true
end

if not stored_fresh() then
  local place = {}
  for i = 2, #ARGV, 4 do
    local queue, id = ARGV[i], ARGV[i + 1]
    if place[id] then  -- sent earlier in this batch: that copy is replaced, as by a later send
      ready[place[id][1]][place[id][2]] = false
      place[id] = nil
    end
    if store(prefix, msgs, delayed, woken, queue, id, ARGV[i + 2], ARGV[i + 3]) then
      place[id] = {queue, ready_at_tail(queue, id)}
    end
  end
end
for _, queue in ipairs(queues) do
  local ids = {}
  for _, id in ipairs(ready[queue]) do
    if id then ids[#ids + 1] = id end
  end
  for j = 1, #ids, 1000 do
    redis.call('LPUSH', qkey(prefix, queue), unpack(ids, j, math.min(j + 999, #ids)))
  end
  if #ids > 0 then
    note_band(prefix, queue)
    wake(prefix, queue, woken)
  end
end
return #ARGV
