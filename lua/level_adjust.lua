-- inventory.level.adjusted: add a signed delta to on_hand at one location.
-- KEYS: 1 inv, 2 holds, 3 hexp, 4 idempotency key of the event
-- ARGV: 1 now_ms, 2 idempotency ttl ms, 3 location, 4 delta (non-zero)
-- Reply: {'ok'|'neg'|'big'|'dup', detail, fields before, fields after}
--   'neg' (negative_on_hand, nothing changed): detail {on_hand now}
--   'big' (nothing changed): detail {on_hand now}; the sku's on hand over all
--     locations would pass the largest quantity (10^10 units, 10^14 raw),
--     past which sums are no longer exact in Lua's doubles
--   'dup': detail is the first reply's {code, on_hand}
local inv, holds, hexp, ekey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nonneg(ARGV[1], 'now_ms')
local ttl = pos(ARGV[2], 'idempotency ttl')
local loc = id(ARGV[3], 'location')
local delta = num(ARGV[4], 'delta')
if delta == 0 then return error('reservoir: delta must not be 0') end

local t, before = load(inv)
local expired = expire_holds(inv, holds, hexp, t, now)
local prev = seen(ekey)
if prev then
  if expired > 0 then bump(inv) end
  return { 'dup', prev, before, redis.call('HGETALL', inv) }
end
local h = hnum(t, 'h:' .. loc)
if h + delta < 0 then
  if expired > 0 then bump(inv) end
  remember(ekey, { 'neg', I(h) }, ttl)
  return { 'neg', { I(h) }, before, redis.call('HGETALL', inv) }
end
if over_max(t, loc, h + delta) then
  if expired > 0 then bump(inv) end
  remember(ekey, { 'big', I(h) }, ttl)
  return { 'big', { I(h) }, before, redis.call('HGETALL', inv) }
end
redis.call('HSET', inv, 'h:' .. loc, I(h + delta), 'ex', '1')
bump(inv)
remember(ekey, { 'ok', I(h + delta) }, ttl)
return { 'ok', { I(h + delta) }, before, redis.call('HGETALL', inv) }
