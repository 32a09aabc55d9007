-- inventory.channel.configured: the channel's locations, set once per event.
-- KEYS: 1 the channel's key, 2 the set of channel names, 3 the event's marker
--       (all under the {ch} hash tag: one slot, so this is atomic)
-- ARGV: 1 channel name, 2 locations as a JSON list, 3 marker ttl ms
-- Reply: {'new'|'dup', locations before (JSON or '')}
--   dup: the event was applied before; nothing is written, so a replayed
--   older event cannot bring back old locations.
local before = redis.call('GET', KEYS[1]) or ''
if redis.call('EXISTS', KEYS[3]) == 1 then return { 'dup', before } end
local ttl = tonumber(ARGV[3])
if not ttl or ttl <= 0 then return error('reservoir: marker ttl must be > 0') end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], '1', 'PX', ttl)
return { 'new', before }
