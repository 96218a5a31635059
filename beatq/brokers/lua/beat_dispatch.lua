-- KEYS: lease, settled, next, info, paused, msgs, delayed[, held: hold the messages (hold_one)]
-- ARGV: prefix, "holder|token", entry, slot, next run ('' none), info, busy id ('' none, BUSY:
--       the caller found it stored, see lib.lua),
--       then (queue, id, body, eta) per message
local prefix, entry, slot, nxt = ARGV[1], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 'lost' end

local function advance()
  if nxt == '' then redis.call('ZREM', KEYS[3], entry) else redis.call('ZADD', KEYS[3], nxt, entry) end
end

local settled = redis.call('HGET', KEYS[2], entry)
if settled and tonumber(settled) >= tonumber(slot) then advance() return 'done' end
-- a paused entry or a busy one (overlap: skip) gives this run up: settled, not sent
if redis.call('SISMEMBER', KEYS[5], entry) == 1 then
  redis.call('HSET', KEYS[2], entry, slot)
  advance()
  return 'paused'
end
if ARGV[7] == BUSY or (ARGV[7] ~= '' and redis.call('HEXISTS', KEYS[6], ARGV[7]) == 1) then
  redis.call('HSET', KEYS[2], entry, slot)
  advance()
  return 'busy'
end

redis.call('HSET', KEYS[2], entry, slot)
redis.call('HSET', KEYS[4], entry, ARGV[6])
advance()
local woken = {}
for i = 8, #ARGV, 4 do
  if KEYS[8] then
    hold_one(prefix, KEYS[6], KEYS[7], KEYS[8], woken, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  else
    send_one(prefix, KEYS[6], KEYS[7], woken, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  end
end
return 'sent'
