-- KEYS: the chord's finished members (set), its unlock (hash: queue, id, body, eta)
-- ARGV: member id, header size, ttl ms, then the unlock message (queue, id, body, eta)
-- Count a finished member (once however often it finishes). The member that completes
-- the header keeps its unlock message here; until the caller has sent it (redis+cluster://,
-- `send_once` in the queue's slot, then HDEL), every call returns it, so a finish retried
-- after a crash between the two still sends it, and two members never send two.
-- Returns {} or the unlock message to send.
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then return {} end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'queue', ARGV[4], 'id', ARGV[5], 'body', ARGV[6], 'eta', ARGV[7], 'sent', '')
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local unlock = redis.call('HMGET', KEYS[2], 'queue', 'id', 'body', 'eta', 'sent')
if unlock[5] ~= '' then return {} end
return {unlock[1], unlock[2], unlock[3], unlock[4]}
