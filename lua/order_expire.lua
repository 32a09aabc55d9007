-- Early shipments and credit memos whose order never came: once the
-- deadline order_note set (the last op's arrival + the order retention)
-- has passed with no decision, the sweep dead-letters them (peek), and
-- once their dead letters are acknowledged forgets them (forget), so a
-- crash in between dead-letters them again rather than never.
-- KEYS: 1 order key rv:o:{order_id}, 2 its pending-op list
-- ARGV: 1 mode: peek | forget, 2 now_ms
-- Reply: {'decided'}              placed (confirmed or rejected): nothing to do
--        {'later', deadline ms}   not due yet ('' = nothing kept)
--        {'due', ops...}          peek: the kept ops (JSON, as queued)
--        {'forgotten'}            forget: the kept ops are gone
-- The ops' p:<op> markers stay, so a redelivery is not kept again.
local okey, plist = KEYS[1], KEYS[2]
local mode = ARGV[1]
if mode ~= 'peek' and mode ~= 'forget' then return error('reservoir: mode must be peek or forget') end
local now = tonumber(ARGV[2])
if not now then return error('reservoir: now_ms must be a number') end
local st = redis.call('HGET', okey, 'st')
if st == 'confirmed' or st == 'rejected' then return { 'decided' } end
local dl = redis.call('HGET', okey, 'dl')
if not dl or redis.call('LLEN', plist) == 0 then return { 'later', '' } end
if tonumber(dl) > now then return { 'later', dl } end
if mode == 'peek' then
  local out = { 'due' }
  for _, p in ipairs(redis.call('LRANGE', plist, 0, -1)) do out[#out + 1] = p end
  return out
end
redis.call('DEL', plist)
redis.call('HDEL', okey, 'dl')
return { 'forgotten' }
