-- After sweeping a sku: move it to its next expiry, or drop it, unless a
-- hold was indexed since the sweeper read the generation.
-- KEYS: 1 zset of skus by earliest expiry, 2 hash sku -> generation
-- ARGV: 1 sku, 2 generation read before the sweep ('' = none), 3 next expiry ms ('' = none)
-- Reply: 1 when applied, 0 when a newer hold was indexed meanwhile
local g = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if g ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
