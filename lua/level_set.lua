-- inventory.level.set: set on_hand (and in_stock) at one location.
-- KEYS: 1 inv, 2 holds, 3 hexp, 4 idempotency key of the event
-- ARGV: 1 now_ms, 2 idempotency ttl ms, 3 location, 4 on_hand >= 0, 5 in_stock (0|1)
-- Reply: {'ok'|'big'|'dup', {}, fields before, fields after}
--   'big' (nothing changed, not remembered): the sku's on hand over all
--     locations would pass the largest quantity (10^10 units, 10^14 raw),
--     past which sums are no longer exact in Lua's doubles
local inv, holds, hexp, ekey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nonneg(ARGV[1], 'now_ms')
local ttl = pos(ARGV[2], 'idempotency ttl')
local loc = id(ARGV[3], 'location')
local on_hand = nonneg(ARGV[4], 'on_hand')
if ARGV[5] ~= '0' and ARGV[5] ~= '1' then return error('reservoir: in_stock must be 0 or 1') end

local t, before = load(inv)
-- Checked before anything is written; a repeat of an applied level passes it.
if over_max(t, loc, on_hand) and redis.call('EXISTS', ekey) == 0 then
  return { 'big', {}, before, before }
end
local expired = expire_holds(inv, holds, hexp, t, now)
if seen(ekey) then
  if expired > 0 then bump(inv) end
  return { 'dup', {}, before, redis.call('HGETALL', inv) }
end
redis.call('HSET', inv, 'h:' .. loc, I(on_hand), 'ex', '1')
if ARGV[5] == '0' then
  redis.call('HSET', inv, 's:' .. loc, '0')
else
  redis.call('HDEL', inv, 's:' .. loc)
end
bump(inv)
remember(ekey, { 'ok' }, ttl)
return { 'ok', {}, before, redis.call('HGETALL', inv) }
