-- A cancel, shipment or credit memo arriving for an order: tell the caller
-- whether the placement was decided, or remember the op until it is.
-- KEYS: 1 order key rv:o:{order_id}, 2 its pending-op list
-- ARGV: 1 retention ms, 2 op id, 3 whole cancel (0|1), 4 op payload (for the list),
--       5 deadline ms (now + retention: when order_expire dead-letters kept
--       shipments and credit memos), 6 keep ms (>= retention: how long the
--       kept ops outlive their deadline, for the sweep to find them)
-- Reply: {state, outcome, lines} where state is
--   'confirmed' | 'rejected'  decided: apply the op now (outcome, lines as decided)
--   'canceled'                canceled before placement (now or earlier)
--   'pending'                 remembered; the placement will apply it, or
--                             order_expire.lua gives it up at the deadline
-- Atomic against order_decide on the same key, so no op is missed.
local okey, plist = KEYS[1], KEYS[2]
local retention = tonumber(ARGV[1])
if not retention or retention <= 0 then return error('reservoir: retention must be > 0') end
if ARGV[2] == '' then return error('reservoir: op id must not be empty') end
local deadline, keep = tonumber(ARGV[5]), tonumber(ARGV[6])
if not deadline then return error('reservoir: deadline must be a number') end
if not keep or keep < retention then return error('reservoir: keep must be >= retention') end
local st = redis.call('HGET', okey, 'st')
if st == 'confirmed' or st == 'rejected' then
  return { st, redis.call('HGET', okey, 'out') or '', redis.call('HGET', okey, 'lines') or '' }
end
if st == 'canceled' then return { 'canceled', '', '' } end
if ARGV[3] == '1' then
  redis.call('HSET', okey, 'st', 'canceled')
  redis.call('PEXPIRE', okey, retention)
  return { 'canceled', '', '' }
end
if redis.call('HSETNX', okey, 'p:' .. ARGV[2], '1') == 1 then
  redis.call('RPUSH', plist, ARGV[4])
end
redis.call('HSET', okey, 'dl', ARGV[5])
redis.call('PEXPIRE', okey, keep)
redis.call('PEXPIRE', plist, keep)
return { 'pending', '', '' }
