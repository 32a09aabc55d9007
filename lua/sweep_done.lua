-- After a sweep's availability messages were acknowledged: forget the
-- unpublished mark sweep.lua left, unless a newer sweep release set it again.
-- KEYS: 1 inv
-- ARGV: 1 the version sweep.lua replied as unpublished
-- Reply: 1 when cleared, 0 when a newer release is still to publish
if redis.call('HGET', KEYS[1], 'sw') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'sw')
return 1
