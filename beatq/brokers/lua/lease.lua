-- KEYS: lease, fence, since   ARGV: op ('acquire' | 'renew' | 'release'), holder, token, ttl ms
local op, holder, token, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if op == 'acquire' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return false end
  local new = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], holder .. '|' .. new, 'PX', ttl)
  redis.call('SET', KEYS[3], tostring(clock()))
  return new
end
if redis.call('GET', KEYS[1]) ~= holder .. '|' .. token then return false end
if op == 'renew' then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('DEL', KEYS[1])
end
return 1
