-- inventory.item.configured: replace the sku's settings.
-- KEYS: 1 inv, 2 holds, 3 hexp, 4 idempotency key of the event
-- ARGV: 1 now_ms, 2 idempotency ttl ms,
--       3 settings: tracking(q|i|n) US bo_enabled(0|1) US bo_limit('' = unlimited)
--         US po_enabled US po_limit US out_of_stock_threshold US low_stock_threshold('' = none)
-- Reply: {'ok'|'dup', {}, fields before, fields after}
local inv, holds, hexp, ekey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nonneg(ARGV[1], 'now_ms')
local ttl = pos(ARGV[2], 'idempotency ttl')
local c = split(ARGV[3])
if #c ~= 7 then return error('reservoir: settings must have 7 fields') end
if c[1] ~= 'q' and c[1] ~= 'i' and c[1] ~= 'n' then return error('reservoir: tracking must be q, i or n') end
for _, i in ipairs({ 2, 4 }) do
  if c[i] ~= '0' and c[i] ~= '1' then return error('reservoir: enabled flags must be 0 or 1') end
end
for _, i in ipairs({ 3, 5, 7 }) do
  if c[i] ~= '' then nonneg(c[i], 'limit/threshold') end
end
nonneg(c[6], 'out_of_stock_threshold')

local t, before = load(inv)
local expired = expire_holds(inv, holds, hexp, t, now)
if seen(ekey) then
  if expired > 0 then bump(inv) end
  return { 'dup', {}, before, redis.call('HGETALL', inv) }
end
redis.call('HSET', inv, 'cfg', ARGV[3], 'ex', '1')
bump(inv)
remember(ekey, { 'ok' }, ttl)
return { 'ok', {}, before, redis.call('HGETALL', inv) }
