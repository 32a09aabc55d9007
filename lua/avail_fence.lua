-- After availability messages of one sku were acknowledged: keeps, per
-- channel, where the last message by offset landed, its version and the
-- highest version published; names the channels whose last message is
-- older than one published before it (workers published at once and the
-- older landed last). The caller publishes their current availability
-- again, so the compacted topic's last message per key stays current.
-- KEYS: 1 the sku's inv hash (field f:<channel>: partition offset version
--       highest-version; no other script reads f: fields)
-- ARGV: 1 n, then n times: channel, version, partition, offset (integers
--       as decimal text)
-- Reply: the stale channels, a list of strings
local inv = KEYS[1]
local n = tonumber(ARGV[1])
local stale = {}
for i = 0, n - 1 do
  local ch, v, p, o = ARGV[2 + i * 4], ARGV[3 + i * 4], ARGV[4 + i * 4], ARGV[5 + i * 4]
  -- Stored as text: Lua prints large numbers in exponent form.
  local lp, lo, lv, top = '-1', '-1', '0', '0'
  local cur = redis.call('HGET', inv, 'f:' .. ch)
  if cur then
    lp, lo, lv, top = string.match(cur, '^(%S+) (%S+) (%S+) (%S+)$')
  end
  if tonumber(v) > tonumber(top) then top = v end
  -- Another partition than before: the topic was repartitioned, and this is the newest.
  if p ~= lp or tonumber(o) > tonumber(lo) then lp, lo, lv = p, o, v end
  redis.call('HSET', inv, 'f:' .. ch, lp .. ' ' .. lo .. ' ' .. lv .. ' ' .. top)
  if tonumber(lv) < tonumber(top) then stale[#stale + 1] = ch end
end
return stale
