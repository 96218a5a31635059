-- KEYS: msgs, delayed   ARGV: prefix, then (queue, id, body, eta) per message
local woken = {}
for i = 2, #ARGV, 4 do
  send_one(ARGV[1], KEYS[1], KEYS[2], woken, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
end
return #ARGV
