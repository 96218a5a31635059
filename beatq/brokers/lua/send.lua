-- KEYS: msgs, delayed   ARGV: prefix, then (queue, id, body, eta) per message
-- The ready ones are pushed with one LPUSH per queue (1,000 ids at a time), in order.
local prefix = ARGV[1]
local woken, ready, queues, place = {}, {}, {}, {}
for i = 2, #ARGV, 4 do
  local queue, id = ARGV[i], ARGV[i + 1]
  if place[id] then  -- sent earlier in this batch: that copy is replaced, as by a later send
    ready[place[id][1]][place[id][2]] = false
    place[id] = nil
  end
  if store(prefix, KEYS[1], KEYS[2], woken, queue, id, ARGV[i + 2], ARGV[i + 3]) then
    if not ready[queue] then
      ready[queue] = {}
      queues[#queues + 1] = queue
    end
    local ids = ready[queue]
    ids[#ids + 1] = id
    place[id] = {queue, #ids}
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
