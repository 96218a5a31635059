-- KEYS: held, msgs, delayed   ARGV: prefix
-- Set free every message the beat holds (see hold_one in lib.lua): ready now, or delayed
-- until its own eta. Called after a WAIT confirmed that a replica has them.
local prefix, now, woken = ARGV[1], clock(), {}
local held = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #held, 2 do
  local id, eta = held[i], tonumber(held[i + 1])
  local stored = redis.call('HGET', KEYS[2], id)
  -- not stored: finished or purged meanwhile; off the delayed set: due and taken already
  if stored and redis.call('ZSCORE', KEYS[3], id) then
    local queue = queue_of(stored)
    if eta > now then
      redis.call('ZADD', KEYS[3], eta, id)
    else
      redis.call('ZREM', KEYS[3], id)
      redis.call('LPUSH', qkey(prefix, queue), id)
      note_band(prefix, queue)
    end
    wake(prefix, queue, woken)
  end
end
redis.call('DEL', KEYS[1])
return #held / 2
