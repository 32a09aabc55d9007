-- Index a sku with a live hold for the sweep (one shard of the index).
-- KEYS: 1 zset of skus by earliest expiry, 2 hash sku -> generation, 3 generation counter
-- ARGV: 1 sku, 2 expires_ms
-- Reply: the new generation
-- LT keeps the earliest expiry; the generation lets the sweeper's later
-- removal notice that a hold was indexed after it looked.
redis.call('ZADD', KEYS[1], 'LT', ARGV[2], ARGV[1])
local g = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], ARGV[1], g)
return g
