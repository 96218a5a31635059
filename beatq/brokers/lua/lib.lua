-- Shared by every script (set up once when the library loads). Key names mirror RedisKeys
-- in redis.py.
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function qkey(prefix, queue) return prefix .. ':q:' .. queue end
local function dkey(prefix, queue) return prefix .. ':d:' .. queue end
local function wkey(prefix, queue) return prefix .. ':w:' .. queue end
local function rkey(prefix, id) return prefix .. ':r:' .. id end
local function skey(prefix, id) return prefix .. ':s:' .. id end
local function ckey(prefix, group) return prefix .. ':chord:' .. group end

-- Priority bands. A message sent with a priority p > 0 is stored under the queue name
-- "queue\31p" (a band of its queue): its ids live in the lists of that name, so every
-- script that moves a message by its stored queue keeps its band. {p}:b:{queue}, a zset
-- of the queue's bands (member and score p), tells a claim which bands to drain first;
-- a queue never sent a priority has none, and costs its claim one empty ZREVRANGE.
local BAND = '\31'

local function bkey(prefix, queue) return prefix .. ':b:' .. queue end

-- The queue a stored queue name is a band of (the name itself when it is no band), and
-- the band ('' for none).
local function base_of(queue)
  local at = string.find(queue, BAND, 1, true)
  if not at then return queue, '' end
  return string.sub(queue, 1, at - 1), string.sub(queue, at + 1)
end

-- After ids were pushed to the lists of stored queue name `queue`: if it is a band, note
-- it among its queue's bands (a claim drops a band once it finds it empty).
local function note_band(prefix, queue)
  local base, band = base_of(queue)
  if band ~= '' then redis.call('ZADD', bkey(prefix, base), tonumber(band), band) end
end

-- Leave one wake-up token for the workers blocked on `queue` (never more than one).
-- `woken` is a table of the queues this call has woken already, so a batch wakes each once.
local function wake(prefix, queue, woken)
  queue = base_of(queue)
  if woken[queue] then return end
  woken[queue] = true
  local w = wkey(prefix, queue)
  if redis.call('LLEN', w) == 0 then redis.call('LPUSH', w, '1') end
end

-- The message id of a claim ("id|token", the member of the unacked set).
local function id_of(claim)
  local bar = string.find(claim, '|', 1, true)
  return bar and string.sub(claim, 1, bar - 1) or claim
end

-- The queue name stored in front of a message ("queue\n", its delivery property byte, the body).
local function queue_of(stored)
  return string.sub(stored, 1, string.find(stored, '\n', 1, true) - 1)
end

-- What a call's stores learn once and keep in its `woken` table, beside the queue names
-- (which hold no newline): the server's clock, and the earliest eta of the delayed set
-- (false: none), kept as each store delays a message (a batch of ETA messages reads each
-- once, not once a message).
local NOW, FIRST = '\nnow', '\nfirst'

-- Store one message as `stored` ("queue\n", its delivery property byte, its body), or
-- delay it until `eta`. True when it is ready: the caller puts its id at the tail of its
-- queue (and wakes the queue).
local function store_as(prefix, msgs, delayed, woken, queue, id, stored, eta)
  if redis.call('HSETNX', msgs, id, stored) == 0 then
    -- an id stored again replaces its message: out of its queue and off its eta first,
    -- or it would be taken twice (a fresh id, the usual case, skips this)
    local old = queue_of(redis.call('HGET', msgs, id))
    redis.call('LREM', qkey(prefix, old), 0, id)
    redis.call('LREM', dkey(prefix, old), 0, id)
    redis.call('ZREM', delayed, id)
    woken[FIRST] = nil  -- it may have been the earliest
    redis.call('HSET', msgs, id, stored)
  end
  if eta == '' then return true end
  local at, now = tonumber(eta), woken[NOW]
  if not now then
    now = clock()
    woken[NOW] = now
  end
  if at <= now then return true end
  local first = woken[FIRST]
  if first == nil then
    local head = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
    first = head[2] and tonumber(head[2]) or false
  end
  redis.call('ZADD', delayed, eta, id)
  -- a new earliest eta: wake a worker so it shortens its wait
  if not first or at < first then
    wake(prefix, queue, woken)
    first = at
  end
  woken[FIRST] = first
  return false
end

-- `store_as` for a body not yet prefixed with its queue's name.
local function store(prefix, msgs, delayed, woken, queue, id, body, eta)
  return store_as(prefix, msgs, delayed, woken, queue, id, queue .. '\n' .. body, eta)
end

-- Store one message: ready at the tail of its queue, or delayed until `eta`.
local function send_one(prefix, msgs, delayed, woken, queue, id, body, eta)
  if store(prefix, msgs, delayed, woken, queue, id, body, eta) then
    redis.call('LPUSH', qkey(prefix, queue), id)
    note_band(prefix, queue)
    wake(prefix, queue, woken)
  end
end

-- Behind Sentinel the beat's dispatches count once a replica has them (redis.py,
-- `Replication`): a dispatched message is stored unseen until then, delayed HOLD seconds,
-- its own eta kept in the beat's held set (0: none), and beat_release sets it free after
-- the WAIT that confirmed it. A master that dies first takes the message and the run's
-- settlement with it; the new master's leader dispatches the run again, and no worker
-- saw the first. Should no leader release it, it runs HOLD seconds late.
local HOLD = 120

-- A busy id (beat_dispatch, schedules run) the caller found stored itself: on
-- redis+cluster:// the entry's last message is in its queue's slot, out of the script's reach.
local BUSY = '\1'

local function hold_one(prefix, msgs, delayed, held, woken, queue, id, body, eta)
  store(prefix, msgs, delayed, woken, queue, id, body, tostring(clock() + HOLD))
  redis.call('ZADD', held, eta == '' and 0 or eta, id)
end
