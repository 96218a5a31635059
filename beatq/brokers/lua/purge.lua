-- KEYS: msgs (hash id -> stored message)
-- ARGV: prefix, queue names...
-- Deletes the ready messages of each queue (its due lane and its list) for good; the
-- number deleted. Delayed and claimed messages are not in these lists, so they stay.
local msgs, prefix = KEYS[1], ARGV[1]
local count = 0
for i = 2, #ARGV do
  local queue = ARGV[i]
  local keys = {dkey(prefix, queue), qkey(prefix, queue)}
  for _, band in ipairs(redis.call('ZRANGE', bkey(prefix, queue), 0, -1)) do
    keys[#keys + 1] = dkey(prefix, queue .. BAND .. band)  -- its priority bands (lib.lua)
    keys[#keys + 1] = qkey(prefix, queue .. BAND .. band)
  end
  redis.call('DEL', bkey(prefix, queue))
  for _, key in ipairs(keys) do
    local ids = redis.call('LRANGE', key, 0, -1)
    for j = 1, #ids, 1000 do
      count = count + redis.call('HDEL', msgs, unpack(ids, j, math.min(j + 999, #ids)))
    end
    redis.call('DEL', key)
  end
end
return count
