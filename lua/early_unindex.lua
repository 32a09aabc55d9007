-- Drops an order from the early-op index, unless an op noted since the
-- sweeper looked moved its deadline past now.
-- KEYS: 1 zset of order ids by deadline (one shard)
-- ARGV: 1 order id, 2 now_ms
-- Reply: 1 when dropped, 0 when kept
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
