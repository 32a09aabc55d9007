-- Compensation of a placement that failed on another sku (or was canceled
-- first): release everything this order reserved on the sku and leave a
-- tombstone, so a late or concurrent retry cannot reserve it again.
-- KEYS: 1 inv, 2 holds, 3 hexp, 4 order record, 5 the consumed-hold marker
--       of the order's cart (see reserve.lua)
-- ARGV: 1 now_ms, 2 retention ms
-- Reply: {'ok', {previous state r|x|a|n|'', restored hold expiry ms or ''},
--         fields before, fields after}
-- A cart hold the placement had turned into its reservation is given back
-- if it has not expired, the cart has neither held nor released the sku
-- since (the marker still names this record), and it fits: at each of its
-- locations on_hand - reserved, after this order's release, covers its
-- units there, each is still in stock, and what stays free there beyond it
-- is at least the out-of-stock threshold (else it is not given back at
-- all, as a hold that does not fit is refused; other carts may have taken
-- the units meanwhile). Only its own locations count, which may refuse a
-- hold the channel's others could cover, never the reverse. Its
-- expiry is replied (for the caller to index) also by every later abort
-- while the cart still has that hold: the abort that gave it back may have
-- died before indexing it. Record field rh: the expiry given back.
local inv, holds, hexp, orec, consumed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = nonneg(ARGV[1], 'now_ms')
local retention = pos(ARGV[2], 'retention')

local t, before = load(inv)
local expired = expire_holds(inv, holds, hexp, t, now)
local st = rget(orec, 'st') or ''
local changed = expired > 0
if st == 'r' then
  for _, l in ipairs(split(rget(orec, 'ln'))) do
    if release_line(inv, t, orec, l, alloc_sum(ralloc(orec, 'a:' .. l))) > 0 then changed = true end
  end
end
local restored = ''
local h = split(rget(orec, 'hold'))
if st == 'r' and #h > 0 then
  local cart, hq, hexp_ms = h[1], h[2], tonumber(h[3])
  local alloc = alloc_parse(h, 4)
  local fits, spare = true, 0
  for i = 1, #alloc, 2 do
    local free = hnum(t, 'h:' .. alloc[i]) - hnum(t, 'r:' .. alloc[i])
    if free < alloc[i + 1] or not in_stock(t, alloc[i]) then fits = false end
    spare = spare + free - alloc[i + 1]
  end
  if spare < cfg(t).oos then fits = false end
  local mine = redis.call('GET', consumed) == orec
  if mine then redis.call('DEL', consumed) end
  if hexp_ms > now and mine and fits and not redis.call('HGET', holds, cart) then
    apply_alloc(inv, t, alloc, 1)
    redis.call('HSET', holds, cart, join({ hq, h[3], alloc_str(alloc) }))
    redis.call('ZADD', hexp, h[3], cart)
    redis.call('HSET', orec, 'rh', h[3])
    restored = h[3]
    changed = true
  end
elseif st == 'a' and #h > 0 and rget(orec, 'rh') then
  local cur = hold_of(holds, h[1])
  if cur and I(cur.exp) == rget(orec, 'rh') then restored = rget(orec, 'rh') end
end
if st == 'r' or st == '' or st == 'n' then
  redis.call('HSET', orec, 'st', 'a')
  redis.call('PEXPIRE', orec, retention)
end
if changed then bump(inv) end
return { 'ok', { st, restored }, before, redis.call('HGETALL', inv) }
