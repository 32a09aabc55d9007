-- cart.released, per sku: release this cart's hold on the sku.
-- KEYS: 1 inv, 2 holds, 3 hexp, 4 idempotency key of the event,
--       5 the cart's consumed-hold marker (deleted: see reserve.lua)
-- ARGV: 1 now_ms, 2 idempotency ttl ms, 3 cart_id
-- Reply: {'ok'|'dup', {released qty}, fields before, fields after}
local inv, holds, hexp, ekey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nonneg(ARGV[1], 'now_ms')
local ttl = pos(ARGV[2], 'idempotency ttl')
local cart = id(ARGV[3], 'cart_id')

local t, before = load(inv)
local expired = expire_holds(inv, holds, hexp, t, now)
local prev = seen(ekey)
if prev then
  if expired > 0 then bump(inv) end
  return { 'dup', prev, before, redis.call('HGETALL', inv) }
end
-- Released: a hold an order consumed is not given back by its compensation.
redis.call('DEL', KEYS[5])
local cur = hold_of(holds, cart)
local released = 0
if cur then
  apply_alloc(inv, t, cur.alloc, -1)
  redis.call('HDEL', holds, cart)
  redis.call('ZREM', hexp, cart)
  released = cur.qty
end
if released > 0 or expired > 0 or cur then bump(inv) end
remember(ekey, { I(released) }, ttl)
return { 'ok', { I(released) }, before, redis.call('HGETALL', inv) }
