-- Shared by every script (prepended when loaded). Key names mirror RedisKeys in redis.py.
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function qkey(prefix, queue) return prefix .. ':q:' .. queue end
local function wkey(prefix, queue) return prefix .. ':w:' .. queue end
local function rkey(prefix, id) return prefix .. ':r:' .. id end
local function skey(prefix, id) return prefix .. ':s:' .. id end
local function ckey(prefix, group) return prefix .. ':chord:' .. group end

-- Leave one wake-up token for the workers blocked on `queue` (never more than one).
local function wake(prefix, queue)
  local w = wkey(prefix, queue)
  if redis.call('LLEN', w) == 0 then redis.call('LPUSH', w, '1') end
end

-- The message id of a claim ("id|token", the member of the unacked set).
local function id_of(claim)
  local bar = string.find(claim, '|', 1, true)
  return bar and string.sub(claim, 1, bar - 1) or claim
end

-- The queue name stored in front of a message body ("queue\nbody").
local function queue_of(stored)
  return string.sub(stored, 1, string.find(stored, '\n', 1, true) - 1)
end

-- Store one message: ready at the tail of its queue, or delayed until `eta`.
local function send_one(prefix, msgs, delayed, now, queue, id, body, eta)
  -- an id stored again replaces its message: out of its queue, or it would be taken twice
  local old = redis.call('HGET', msgs, id)
  if old then redis.call('LREM', qkey(prefix, queue_of(old)), 0, id) end
  redis.call('HSET', msgs, id, queue .. '\n' .. body)
  redis.call('ZREM', delayed, id)
  if eta ~= '' and tonumber(eta) > now then
    local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
    redis.call('ZADD', delayed, eta, id)
    -- a new earliest eta: wake a worker so it shortens its wait
    if first[2] == nil or tonumber(eta) < tonumber(first[2]) then wake(prefix, queue) end
  else
    redis.call('LPUSH', qkey(prefix, queue), id)
    wake(prefix, queue)
  end
end
