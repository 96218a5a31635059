-- KEYS: msgs, delayed
-- ARGV: prefix, then runs of messages sharing a stored queue name and an eta (redis.py,
-- `_send_args`): the queue, the eta ('' for none), the run's length n, then n pairs of an id
-- and its stored value ("queue\n", the delivery property byte, the body).
-- The ready ones are pushed with one LPUSH per queue (1,000 ids at a time), in order.
local prefix, msgs, delayed = ARGV[1], KEYS[1], KEYS[2]
local woken, ready, queues = {}, {}, {}
local runs = {}  -- {queue, eta, index of its first id in ARGV, of its last}
local i = 2
while i <= #ARGV do
  local last = i + 1 + 2 * tonumber(ARGV[i + 2])
  runs[#runs + 1] = {ARGV[i], ARGV[i + 1], i + 3, last}
  i = last + 2
end

local function ready_at_tail(queue, id)
  if not ready[queue] then
    ready[queue] = {}
    queues[#queues + 1] = queue
  end
  local ids = ready[queue]
  ids[#ids + 1] = id
  return #ids
end

-- The usual batch: fresh ids, each sent once. Then nothing is replaced, and what `store_as`
-- does one message at a time is done with one HSET and one ZADD (1,000 arguments at a
-- time): the same keys, values and wake-ups. False, having written nothing, for any other.
local function stored_fresh()
  local ids, seen = {}, {}
  for _, run in ipairs(runs) do
    for j = run[3], run[4], 2 do
      local id = ARGV[j]
      if seen[id] then return false end
      seen[id] = true
      ids[#ids + 1] = id
    end
  end
  for j = 1, #ids, 1000 do
    for _, found in ipairs(redis.call('HMGET', msgs, unpack(ids, j, math.min(j + 999, #ids)))) do
      if found then return false end
    end
  end
  local fields, etas, now, first = {}, {}, nil, nil
  for _, run in ipairs(runs) do
    local queue, eta = run[1], run[2]
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
        -- a new earliest eta: wake a worker so it shortens its wait
        if not first or at < first then
          wake(prefix, queue, woken)
          first = at
        end
      end
    end
    for j = run[3], run[4], 2 do
      local id = ARGV[j]
      fields[#fields + 1] = id
      fields[#fields + 1] = ARGV[j + 1]
      if delay then
        etas[#etas + 1] = eta
        etas[#etas + 1] = id
      else
        ready_at_tail(queue, id)
      end
    end
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
  for _, run in ipairs(runs) do
    local queue, eta = run[1], run[2]
    for j = run[3], run[4], 2 do
      local id = ARGV[j]
      if place[id] then  -- sent earlier in this batch: that copy is replaced, as by a later send
        ready[place[id][1]][place[id][2]] = false
        place[id] = nil
      end
      if store_as(prefix, msgs, delayed, woken, queue, id, ARGV[j + 1], eta) then
        place[id] = {queue, ready_at_tail(queue, id)}
      end
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
