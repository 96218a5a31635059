-- KEYS: msgs, delayed   ARGV: prefix, ttl ms, then (queue, id, body, eta, mark) per message
-- Send each message unless its mark was seen here within the ttl: a step made again
-- after its reply was lost, or after a crash, sends nothing twice (redis+cluster://: a
-- finish's callbacks, marked with the finish's token; a chord's unlock; the beat's runs,
-- marked with their entry and slot). Returns how many were sent.
-- A mark seen already is kept another ttl: a write, so that a WAIT after a step made
-- again counts the replicas that have what the first try wrote (both or neither of a
-- message and its mark: a script's writes replicate as one).
local prefix, ttl, woken, sent = ARGV[1], ARGV[2], {}, 0
for i = 3, #ARGV, 5 do
  local mark = prefix .. ':sent:' .. ARGV[i + 4]
  if redis.call('SET', mark, '1', 'NX', 'PX', ttl) then
    send_one(prefix, KEYS[1], KEYS[2], woken, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    sent = sent + 1
  else
    redis.call('PEXPIRE', mark, ttl)
  end
end
return sent
