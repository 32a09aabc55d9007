-- inventory.channel.configured: the channel's locations, set once per event.
-- KEYS: 1 the channel's key, 2 the set of channel names, 3 the event's marker,
--       4 the channel generation, 5 the event's recompute-done marker (all
--       under the {ch} hash tag: one slot, so this is atomic)
-- ARGV: 1 channel name, 2 locations as a JSON list, 3 marker ttl ms,
--       4 a new generation (a random token: unlike a counter, no flush or
--       restored backup can bring back a value a worker has cached)
-- Reply: {'new'|'dup', locations before the event (JSON or ''), locations now,
--         '1' when the event's recompute was done before (the caller sets
--         KEYS[5] after it), else '0'}
--   new: the generation changes, so every worker reads the lists again
--   before it computes availability (src/store/channels.rs).
--   dup: the event was applied before; nothing is written, so a replayed
--   older event cannot bring back old locations. The locations before are
--   the ones the first delivery replaced (kept in the marker), so a
--   redelivery after a crash recomputes the skus of removed locations too;
--   a marker from before they were kept holds '1' (the locations now are
--   the best guess then).
local now = redis.call('GET', KEYS[1]) or ''
local marker = redis.call('GET', KEYS[3])
if marker then
  if marker == '1' then marker = now end
  return { 'dup', marker, now, redis.call('EXISTS', KEYS[5]) == 1 and '1' or '0' }
end
local ttl = tonumber(ARGV[3])
if not ttl or ttl <= 0 then return error('reservoir: marker ttl must be > 0') end
if not ARGV[4] or ARGV[4] == '' then return error('reservoir: the generation must not be empty') end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], now, 'PX', ttl)
redis.call('SET', KEYS[4], ARGV[4])
return { 'new', now, ARGV[2], '0' }
