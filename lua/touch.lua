-- inventory.channel.configured, per sku stocked at the channel's locations:
-- bump the version so the recomputed availability is newer than any before.
-- Once per sku and event: a redelivery after a crash bumps exactly the
-- skus the first delivery did not reach; once the change's recompute was
-- done (ARGV 3), a replay bumps none (a sku stocked since had its own).
-- KEYS: 1 inv, 2 holds, 3 hexp, 4 idempotency key of the event
-- ARGV: 1 now_ms, 2 idempotency ttl ms, 3 '1' when the change's recompute
--       was done before
-- Reply: {'ok'|'dup', {}, fields before, fields after}
local inv, holds, hexp, ekey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nonneg(ARGV[1], 'now_ms')
local ttl = pos(ARGV[2], 'idempotency ttl')

local t, before = load(inv)
local expired = expire_holds(inv, holds, hexp, t, now)
if ARGV[3] == '1' or seen(ekey) or t['ex'] ~= '1' then
  if expired > 0 then bump(inv) end
  return { 'dup', {}, before, redis.call('HGETALL', inv) }
end
bump(inv)
remember(ekey, { 'ok' }, ttl)
return { 'ok', {}, before, redis.call('HGETALL', inv) }
