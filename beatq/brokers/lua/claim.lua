-- KEYS: msgs, delayed, unacked
-- ARGV: prefix, count, visibility, token, ahead, ack_first ('1' or ''), above, queue...
-- Each queue is drained band by band, the highest priority first (see lib.lua), then its
-- plain lists. `above` ('' for none): from the last queue, only bands above that priority.
-- Returns {next_eta or '', acked (0 | 1), id1, stored1, id2, stored2, ...}; each is
-- claimed as "id|token", except the first when acked: acknowledged (deleted) at once.
-- When nothing is due, delayed messages due within `ahead` seconds are taken as if due
-- (their caller holds them until their eta).
local msgs, delayed, unacked = KEYS[1], KEYS[2], KEYS[3]
local prefix, count, visibility = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local token = '|' .. ARGV[4]
local ahead = tonumber(ARGV[5])
local ack_first = ARGV[6] == '1'
local above = tonumber(ARGV[7])
local first_queue = 8
local now = clock()
local woken = {}
-- ids of messages put back as their claim expired, until claimed again (see Claim.redelivered)
local redelivered = prefix .. ':redelivered'

-- Whether its sender stored the message as acknowledged at claim: the byte after its
-- queue (see redis.py `_stored`).
local function acked_at_claim(stored)
  return string.byte(stored, string.find(stored, '\n', 1, true) + 1) == 1
end

-- Messages made ready before their eta are held by their worker until then: they are no
-- longer acknowledged at claim (that worker could die first; see roles.Delivery.claim).
local function hold(ids)
  if #ids == 0 then return end
  local stored = redis.call('HMGET', msgs, unpack(ids))
  for i, id in ipairs(ids) do
    local value = stored[i]
    if value then
      local at = string.find(value, '\n', 1, true) + 1
      if string.byte(value, at) == 1 then
        redis.call('HSET', msgs, id, string.sub(value, 1, at - 1) .. '\2' .. string.sub(value, at + 1))
      end
    end
  end
end

-- Claims whose worker stopped renewing them (the visibility timeout) go back to the head
-- of their queue. Delayed messages that fell due join the queue's due lane ({p}:d:), which
-- is taken before the queue itself: an ETA task does not wait behind work sent before its
-- eta, and among due ones the earliest eta goes first, also under a backlog (were they
-- pushed to the queue's head, each claim's newly due would go ahead of those due before).
local function requeue(zset, members, due)
  if #members == 0 then return end
  local ids = {}
  for i, member in ipairs(members) do ids[i] = id_of(member) end
  local stored = redis.call('HMGET', msgs, unpack(ids))
  local by_queue, queues = {}, {}  -- the ids of each queue, in order: one push per queue
  for i = 1, #ids do
    if stored[i] then
      local queue = queue_of(stored[i])
      if not by_queue[queue] then
        by_queue[queue] = {}
        queues[#queues + 1] = queue
      end
      local list = by_queue[queue]
      list[#list + 1] = ids[i]
    end
  end
  if not due then
    redis.call('SADD', redelivered, unpack(ids))
    -- Each expired claim is remembered a day: its worker, paused past its visibility
    -- timeout, is told its acknowledgement is stale even once the message was run and
    -- acknowledged elsewhere (finish.lua), and does not run it a second time.
    local expired, marks = prefix .. ':expired', {}
    redis.call('ZREMRANGEBYSCORE', expired, '-inf', now)
    for i, member in ipairs(members) do
      marks[2 * i - 1], marks[2 * i] = now + 86400, member
    end
    redis.call('ZADD', expired, unpack(marks))
  end
  for _, queue in ipairs(queues) do
    if due then
      redis.call('LPUSH', dkey(prefix, queue), unpack(by_queue[queue]))
    else
      redis.call('RPUSH', qkey(prefix, queue), unpack(by_queue[queue]))
    end
    note_band(prefix, queue)
    wake(prefix, queue, woken)
  end
  redis.call('ZREM', zset, unpack(members))
end
requeue(delayed, redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000), true)
requeue(unacked, redis.call('ZRANGEBYSCORE', unacked, '-inf', now, 'LIMIT', 0, 1000), false)

local out = {'', 0}
local taken = 0
local deadline = now + visibility
-- Whether any id is marked redelivered: looked at once, as the first message is taken
-- (a claim that finds nothing does not look; only the requeue above adds marks).
local marked = nil
-- A redelivered message's reply carries \3 for its delivery byte (stored as it was).
local function reply_of(id, stored)
  if marked == nil then marked = redis.call('SCARD', redelivered) > 0 end
  if marked and redis.call('SREM', redelivered, id) == 1 then
    local at = string.find(stored, '\n', 1, true)
    return string.sub(stored, 1, at) .. '\3' .. string.sub(stored, at + 2)
  end
  return stored
end
local function take_from(q)
  while taken < count do
    local ids = redis.call('RPOP', q, count - taken)
    if not ids then break end
    local stored = redis.call('HMGET', msgs, unpack(ids))
    local claims = {}
    for j, id in ipairs(ids) do
      if stored[j] then  -- an id without a body was acknowledged meanwhile: skip it
        if taken == 0 and ack_first and acked_at_claim(stored[j]) then
          redis.call('HDEL', msgs, id)
          out[2] = 1
        else
          claims[#claims + 1] = deadline
          claims[#claims + 1] = id .. token
        end
        out[#out + 1] = id
        out[#out + 1] = reply_of(id, stored[j])
        taken = taken + 1
      end
    end
    if #claims > 0 then redis.call('ZADD', unacked, unpack(claims)) end
  end
end
-- The queues the last take() emptied: every band and list of theirs drained with room to
-- spare, so no work is left behind in them (the wake-up check below need not look).
local drained = {}
-- One queue: its bands, highest first (each band's due lane before its list), then its
-- plain lists unless `floor` (a priority) leaves them out. A band found empty is dropped.
local function take_queue(queue, floor)
  local bands = redis.call('ZREVRANGEBYSCORE', bkey(prefix, queue), '+inf', '(' .. floor)
  for _, band in ipairs(bands) do
    if taken >= count then return end
    local name = queue .. BAND .. band
    take_from(dkey(prefix, name))
    take_from(qkey(prefix, name))
    if taken < count then redis.call('ZREM', bkey(prefix, queue), band) end
  end
  if floor < 0 then
    take_from(dkey(prefix, queue))
    take_from(qkey(prefix, queue))
    drained[queue] = taken < count
  end
end
local function take()
  drained = {}  -- the requeue between two takes may have filled a queue drained before
  for i = first_queue, #ARGV do
    if taken >= count then return end
    take_queue(ARGV[i], (i == #ARGV and above) or -1)
  end
end
take()
-- Nothing due: what falls due within `ahead` (a worker with work to do takes none early,
-- or it would hold it while due messages wait)
if taken == 0 and ahead > 0 then
  hold(redis.call('ZRANGEBYSCORE', delayed, '(' .. now, now + ahead, 'LIMIT', 0, 1000))
  requeue(delayed, redis.call('ZRANGEBYSCORE', delayed, '-inf', now + ahead, 'LIMIT', 0, 1000), true)
  take()
end

-- Work left behind: leave a token so another idle worker wakes for it.
for i = first_queue, #ARGV do
  local queue = ARGV[i]
  if not drained[queue] then
    local left = redis.call('LLEN', dkey(prefix, queue)) + redis.call('LLEN', qkey(prefix, queue))
    if left > 0 or redis.call('EXISTS', bkey(prefix, queue)) == 1 then wake(prefix, queue, woken) end
  end
end

local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if first[2] then out[1] = first[2] end
return out
