-- A sku of a confirmed order has nothing reserved any more; once all have
-- settled, the order's records expire after the retention. The caller
-- names only skus of the order's lines: each counts once, and `n` is the
-- number of the order's skus.
-- KEYS: 1 order key rv:o:{order_id}, 2 its pending-op list
-- ARGV: 1 sku, 2 retention ms
-- Reply: 1 when the whole order is settled now, else 0
local okey, plist = KEYS[1], KEYS[2]
local retention = tonumber(ARGV[2])
if not retention or retention <= 0 then return error('reservoir: retention must be > 0') end
if redis.call('HGET', okey, 'st') ~= 'confirmed' then return 0 end
if redis.call('HSETNX', okey, 'd:' .. ARGV[1], '1') == 1 then
  redis.call('HINCRBY', okey, 'nd', 1)
end
if tonumber(redis.call('HGET', okey, 'nd')) >= tonumber(redis.call('HGET', okey, 'n')) then
  redis.call('PEXPIRE', okey, retention)
  redis.call('PEXPIRE', plist, retention)
  return 1
end
return 0
