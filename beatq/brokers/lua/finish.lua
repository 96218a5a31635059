-- KEYS: msgs, unacked, delayed
-- ARGV: prefix, n_ack, ack ids..., result kind ('' none | 'final' | 'state'), task id, meta,
--       ttl ms, then (queue, id, body, eta) per message to send
-- In this order: acknowledge, store the result (a final one wakes its waiters), send.
local msgs, unacked, delayed = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
local n_ack = tonumber(ARGV[2])
local i = 3
for j = i, i + n_ack - 1 do
  redis.call('ZREM', unacked, ARGV[j])
  redis.call('HDEL', msgs, ARGV[j])
end
i = i + n_ack
local kind, id, meta, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
if kind == 'final' then
  local r = rkey(prefix, id)
  redis.call('DEL', r, skey(prefix, id))
  redis.call('RPUSH', r, meta)
  redis.call('PEXPIRE', r, ttl)
elseif kind == 'state' then
  redis.call('SET', skey(prefix, id), meta, 'PX', ttl)
end
i = i + 4
local now = clock()
for j = i, #ARGV, 4 do
  send_one(prefix, msgs, delayed, now, ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3])
end
return 1
