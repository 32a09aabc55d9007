-- The placement's decision for an order, set once.
-- KEYS: 1 order key rv:o:{order_id}, 2 its pending-op list
-- ARGV: 1 mode: peek | decide | reject_canceled, 2 retention ms,
--       3 state (confirmed|rejected), 4 outcome payload, 5 lines payload, 6 sku count
-- Reply: {'set'|'was'|'canceled'|'none', state, outcome, lines, pending ops...}
--   peek: 'none' when undecided, 'canceled' when canceled first, else 'was'
--   decide: 'set' when this call decided, 'canceled' when a cancel came first
--           (the caller compensates, then calls reject_canceled), else 'was'
--   reject_canceled: records the rejection of a canceled-first order
local okey, plist = KEYS[1], KEYS[2]
local mode = ARGV[1]
local retention = tonumber(ARGV[2])
if mode ~= 'peek' and mode ~= 'decide' and mode ~= 'reject_canceled' then
  return error('reservoir: mode must be peek, decide or reject_canceled')
end
if not retention or retention <= 0 then return error('reservoir: retention must be > 0') end
local function reply(tag)
  local out = { tag, redis.call('HGET', okey, 'st') or '', redis.call('HGET', okey, 'out') or '',
    redis.call('HGET', okey, 'lines') or '' }
  for _, p in ipairs(redis.call('LRANGE', plist, 0, -1)) do out[#out + 1] = p end
  return out
end
local st = redis.call('HGET', okey, 'st')
if st == 'confirmed' or st == 'rejected' then return reply('was') end
if mode == 'peek' then
  if st == 'canceled' then return reply('canceled') end
  return reply('none')
end
if st == 'canceled' and mode == 'decide' then return reply('canceled') end
if mode == 'reject_canceled' and st ~= 'canceled' then
  return error('reservoir: reject_canceled on an order that was not canceled first')
end
local n = tonumber(ARGV[6])
if not n or n < 0 then return error('reservoir: sku count must be >= 0') end
if ARGV[3] ~= 'confirmed' and ARGV[3] ~= 'rejected' then
  return error('reservoir: state must be confirmed or rejected')
end
redis.call('HSET', okey, 'st', ARGV[3], 'out', ARGV[4], 'lines', ARGV[5], 'n', n)
if ARGV[3] == 'rejected' or n == 0 then
  redis.call('PEXPIRE', okey, retention)
  redis.call('PEXPIRE', plist, retention)
else
  -- Open until every sku settles (order_settle).
  redis.call('PERSIST', okey)
  redis.call('PERSIST', plist)
end
return reply('set')
