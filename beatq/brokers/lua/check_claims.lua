-- KEYS: unacked, msgs, expired   ARGV: seconds, then claims ("id|token")
-- Before a finish that sends to other slots than its acknowledgement's (redis+cluster://:
-- what goes to other queues is sent before the acknowledgement): the claims that are stale
-- (as lua/finish.lua tells them), and each live one kept live `seconds` from now at least,
-- so none goes stale between this call and the acknowledgement.
local deadline, stale = clock() + tonumber(ARGV[1]), {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', 'GT', deadline, ARGV[i])
  elseif redis.call('HEXISTS', KEYS[2], id_of(ARGV[i])) == 1
      or redis.call('ZSCORE', KEYS[3], ARGV[i]) then
    stale[#stale + 1] = ARGV[i]
  end
end
return stale
