-- KEYS: msgs, delayed   ARGV: prefix, ttl ms, stamp, then (queue, id, body, eta) per message
-- Send each message unless one of its id was sent with the same stamp within the ttl: a
-- step retried after its reply was lost (redis+cluster://: a finish's callbacks, stamped
-- with the finish's token; a chord's unlock; the beat's outbox) sends nothing twice.
-- Returns how many were sent.
local prefix, ttl, stamp, woken, sent = ARGV[1], ARGV[2], ARGV[3], {}, 0
for i = 4, #ARGV, 4 do
  if redis.call('SET', prefix .. ':sent:' .. stamp .. ':' .. ARGV[i + 1], '1', 'NX', 'PX', ttl) then
    send_one(prefix, KEYS[1], KEYS[2], woken, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    sent = sent + 1
  end
end
return sent
