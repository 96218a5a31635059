-- KEYS: unacked   ARGV: visibility, id...
local deadline = clock() + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
end
return #ARGV - 1
