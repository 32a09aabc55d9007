-- cart.line.held: set this cart's hold on the sku to qty, all or nothing.
-- KEYS: 1 inv, 2 holds, 3 hexp, 4 idempotency key of the event,
--       5 the cart's consumed-hold marker (deleted: see reserve.lua)
-- ARGV: 1 now_ms, 2 idempotency ttl ms, 3 cart_id, 4 qty >= 0, 5 expires_ms,
--       6 channel known (0|1), 7 n, 8.. the channel's n locations in priority order
-- Reply: {'hold'|'dup', {ok|rej, held, available ('' = not counted), expires_ms,
--         indexed (1 when a counted hold was stored)}, fields before, fields after}
-- 'available' is the most this cart could hold now (its own hold counted as free).
local inv, holds, hexp, ekey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nonneg(ARGV[1], 'now_ms')
local ttl = pos(ARGV[2], 'idempotency ttl')
local cart = id(ARGV[3], 'cart_id')
local qty = nonneg(ARGV[4], 'quantity')
local exp = nonneg(ARGV[5], 'expires_ms')
local known = ARGV[6] == '1'
local n = nonneg(ARGV[7], 'location count')
local locs = {}
for i = 1, n do locs[i] = id(ARGV[7 + i], 'location') end

local t, before = load(inv)
local expired = expire_holds(inv, holds, hexp, t, now)
local prev = seen(ekey)
if prev then
  if expired > 0 then bump(inv) end
  return { 'dup', prev, before, redis.call('HGETALL', inv) }
end
-- The cart has said what it holds now: a hold an order consumed earlier is
-- not given back by that order's compensation any more.
redis.call('DEL', KEYS[5])

local changed = expired > 0
local cur = hold_of(holds, cart)
local function drop_current()
  if cur then
    apply_alloc(inv, t, cur.alloc, -1)
    redis.call('HDEL', holds, cart)
    redis.call('ZREM', hexp, cart)
    changed = true
    cur = nil
  end
end
local function finish(res)
  if changed then bump(inv) end
  remember(ekey, res, ttl)
  return { 'hold', res, before, redis.call('HGETALL', inv) }
end
local cur_qty = cur and cur.qty or 0

if t['ex'] ~= '1' or not known then
  return finish({ 'rej', I(cur_qty), '0', I(exp), '0' })
end
if exp <= now then
  drop_current()
  return finish({ 'rej', '0', '0', I(exp), '0' })
end
local c = cfg(t)
if qty == 0 then
  drop_current()
  local _, avail = channel_free(t, locs, nil)
  if c.trk ~= 'q' then avail = '' else avail = I(avail) end
  return finish({ 'ok', '0', avail, I(exp), '0' })
end
if c.trk == 'n' or c.trk == 'i' then
  if c.trk == 'i' and not any_in_stock(t, locs) then
    return finish({ 'rej', I(cur_qty), '', I(exp), '0' })
  end
  drop_current()
  return finish({ 'ok', I(qty), '', I(exp), '0' })
end

local frees, avail = channel_free(t, locs, cur and cur.alloc)
if qty > avail then
  return finish({ 'rej', I(cur_qty), I(avail), I(exp), '0' })
end
drop_current()
local list = {}
take(frees, qty, list)
apply_alloc(inv, t, list, 1)
redis.call('HSET', holds, cart, I(qty) .. US .. I(exp) .. US .. alloc_str(list))
redis.call('ZADD', hexp, I(exp), cart)
changed = true
return finish({ 'ok', I(qty), I(avail), I(exp), '1' })
