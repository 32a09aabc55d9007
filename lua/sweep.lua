-- Hold sweep for one sku (the worker's timer): release holds that are due.
-- KEYS: 1 inv, 2 holds, 3 hexp
-- ARGV: 1 now_ms
-- Reply: {'ok', {released count, next expiry ms or '', unpublished version
--         or '', earlier ('1' when that version was left by an earlier
--         sweep, else '0')}, fields before, fields after}
-- Field sw of inv: the version of a sweep's release whose availability is
-- not yet known to be published. Set here, cleared by sweep_done.lua once
-- the messages are acknowledged; the sku stays in the hold index until
-- then, so a sweeper that dies in between leaves it for the next sweep,
-- which publishes the sku's current availability again.
local inv, holds, hexp = KEYS[1], KEYS[2], KEYS[3]
local now = nonneg(ARGV[1], 'now_ms')

local t, before = load(inv)
local earlier = t['sw'] and '1' or '0'
local expired = expire_holds(inv, holds, hexp, t, now)
if expired > 0 then
  redis.call('HSET', inv, 'sw', I(bump(inv)))
end
local nxt = redis.call('ZRANGE', hexp, 0, 0, 'WITHSCORES')
local next_ms = ''
if #nxt > 0 then next_ms = I(tonumber(nxt[2])) end
local unpublished = redis.call('HGET', inv, 'sw') or ''
return { 'ok', { I(expired), next_ms, unpublished, earlier }, before, redis.call('HGETALL', inv) }
