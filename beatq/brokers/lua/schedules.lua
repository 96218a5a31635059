-- app.schedules' changes (roles.Schedules), each atomic.
-- KEYS: specs, version, requests, cursors, done, lease, msgs, delayed, log[, held (run: hold_one)]
-- ARGV: op, then per op:
--   put:     name, spec, mode ('add' | 'update' | 'set')          -> 1 | 0
--   putmany: (name, spec) pairs, added all or none, one version bump
--            -> the names already stored (none added then), or {}
--   changes: since -> {version, then (name, spec or nil) per entry changed after since}
--   delete:  name                                                  -> 1 | 0
--   request: id, body, seconds a done request is remembered        -> 1 | 0
--   history: prefix, maxlen, then (entry, record) pairs: each pushed on its entry's list, capped
--   run:     prefix, "holder|token", id, slot, last ('1' | ''), busy id ('' none), entry
--            ('' no record), history record, maxlen, then (queue, id, body, eta) per message
--                                                        -> 'lost' | 'done' | 'busy' | 'sent'
local op = ARGV[1]
if op == 'put' then
  local there = redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1
  if (ARGV[4] == 'add' and there) or (ARGV[4] == 'update' and not there) then return 0 end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[9], redis.call('INCR', KEYS[2]), ARGV[2])
  return 1
end
if op == 'putmany' then
  local there = {}
  for i = 2, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then there[#there + 1] = ARGV[i] end
  end
  if #there > 0 then return there end
  local version = redis.call('INCR', KEYS[2])
  for i = 2, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[9], version, ARGV[i])
  end
  return {}
end
if op == 'changes' then
  local out = {redis.call('GET', KEYS[2]) or '0'}
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[9], '(' .. ARGV[2], '+inf')) do
    out[#out + 1] = name
    out[#out + 1] = redis.call('HGET', KEYS[1], name)
  end
  return out
end
if op == 'delete' then
  if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return 0 end
  redis.call('ZADD', KEYS[9], redis.call('INCR', KEYS[2]), ARGV[2])
  return 1
end
if op == 'request' then
  local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. (clock() - tonumber(ARGV[4])))
  for _, id in ipairs(old) do
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
  end
  if #old > 0 then redis.call('ZREM', KEYS[5], unpack(old)) end
  if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 0 end
  -- the body carries its own order: a counter, so requests read back as they were added
  local n = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[3], ARGV[2], n .. '\n' .. ARGV[3])
  return 1
end
if op == 'history' then
  local prefix, last = ARGV[2], tonumber(ARGV[3]) - 1
  for i = 4, #ARGV, 2 do
    local key = prefix .. ':sched:h:' .. ARGV[i]
    redis.call('LPUSH', key, ARGV[i + 1])
    redis.call('LTRIM', key, 0, last)
  end
  return 1
end
-- run
if redis.call('GET', KEYS[6]) ~= ARGV[3] then return 'lost' end
local id, slot = ARGV[4], ARGV[5]
if redis.call('HEXISTS', KEYS[3], id) == 0 then return 'done' end
if redis.call('ZSCORE', KEYS[5], id) then return 'done' end
local cursor = redis.call('HGET', KEYS[4], id)
if cursor and tonumber(cursor) >= tonumber(slot) then return 'done' end
if ARGV[7] == BUSY or (ARGV[7] ~= '' and redis.call('HEXISTS', KEYS[7], ARGV[7]) == 1) then
  return 'busy'
end
local woken = {}
for i = 11, #ARGV, 4 do
  if KEYS[10] then  -- held until a replica has it (see hold_one)
    hold_one(ARGV[2], KEYS[7], KEYS[8], KEYS[10], woken, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  else
    send_one(ARGV[2], KEYS[7], KEYS[8], woken, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  end
end
redis.call('HSET', KEYS[4], id, slot)
if ARGV[6] == '1' then redis.call('ZADD', KEYS[5], clock(), id) end
if ARGV[8] ~= '' then
  local key = ARGV[2] .. ':sched:h:' .. ARGV[8]
  redis.call('LPUSH', key, ARGV[9])
  redis.call('LTRIM', key, 0, tonumber(ARGV[10]) - 1)
end
return 'sent'
