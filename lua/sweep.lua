-- Hold sweep for one sku (the worker's timer): release holds that are due.
-- KEYS: 1 inv, 2 holds, 3 hexp
-- ARGV: 1 now_ms
-- Reply: {'ok', {released count, next expiry ms or ''}, fields before, fields after}
local inv, holds, hexp = KEYS[1], KEYS[2], KEYS[3]
local now = nonneg(ARGV[1], 'now_ms')

local t, before = load(inv)
local expired = expire_holds(inv, holds, hexp, t, now)
if expired > 0 then bump(inv) end
local nxt = redis.call('ZRANGE', hexp, 0, 0, 'WITHSCORES')
local next_ms = ''
if #nxt > 0 then next_ms = I(tonumber(nxt[2])) end
return { 'ok', { I(expired), next_ms }, before, redis.call('HGETALL', inv) }
