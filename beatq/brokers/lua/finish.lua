-- KEYS: msgs, unacked, delayed
-- ARGV: prefix, token ('' none), token ttl ms,
--       n_ack, acked claims ("id|token")...,
--       n_results, then (kind 'final' | 'state', task id, meta, ttl ms) per result,
--       join: group id ('' none), member id, size, ttl ms, then the unlock message (queue, id, body, eta),
--       then (queue, id, body, eta) per message to send
-- In this order: acknowledge, store results (a final one wakes its waiters), count the
-- chord member (the one that completes the header sends the unlock message), send.
-- A finish whose token was seen already (a retry after a lost reply) does nothing.
-- Returns the acknowledged claims that were stale (see Store.finish), as a rule none; a
-- message sent in their stead (a retry, a rate-limited one put back: the same id) is not
-- sent, as that message is another delivery's now.
local msgs, unacked, delayed = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
if ARGV[2] ~= '' and not redis.call('SET', prefix .. ':done:' .. ARGV[2], '1', 'NX', 'PX', ARGV[3]) then
  return {}
end
local stale, replaced = {}, {}
local i = 4
local n_ack = tonumber(ARGV[i])
for j = i + 1, i + n_ack do
  -- Only a live claim acknowledges. One that is not: its message was delivered again
  -- (stored still, or its claim's expiry remembered by claim.lua: run and acknowledged
  -- elsewhere), or this claim acknowledged it in a try whose reply was lost.
  if redis.call('ZREM', unacked, ARGV[j]) == 1 then
    redis.call('HDEL', msgs, id_of(ARGV[j]))
  elseif redis.call('HEXISTS', msgs, id_of(ARGV[j])) == 1
      or redis.call('ZSCORE', prefix .. ':expired', ARGV[j]) then
    stale[#stale + 1] = ARGV[j]
    replaced[id_of(ARGV[j])] = true
  end
end
i = i + n_ack + 1
local n_results = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_results do
  local kind, id, meta, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if kind == 'final' then
    local r = rkey(prefix, id)
    redis.call('DEL', r, skey(prefix, id))
    redis.call('RPUSH', r, meta)
    redis.call('PEXPIRE', r, ttl)
  else
    redis.call('SET', skey(prefix, id), meta, 'PX', ttl)
  end
  i = i + 4
end
local woken = {}
local group = ARGV[i]
if group ~= '' then
  local done, fired = ckey(prefix, group), ckey(prefix, group) .. ':fired'
  redis.call('SADD', done, ARGV[i + 1])
  redis.call('PEXPIRE', done, ARGV[i + 3])
  if redis.call('SCARD', done) >= tonumber(ARGV[i + 2])
      and redis.call('SET', fired, '1', 'NX', 'PX', ARGV[i + 3]) then
    send_one(prefix, msgs, delayed, woken, ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7])
  end
end
i = i + 8
for j = i, #ARGV, 4 do
  if not replaced[ARGV[j + 1]] then
    send_one(prefix, msgs, delayed, woken, ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3])
  end
end
return stale
