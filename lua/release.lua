-- order.canceled, per sku: release what this order still has reserved here,
-- for the whole order or the given line quantities (more than is reserved
-- releases what is there).
-- KEYS: 1 inv, 2 holds, 3 hexp, 4 order record
-- ARGV: 1 now_ms, 2 retention ms, 3 op id (the cancel's event id), 4 whole (0|1),
--       5 m, then m pairs (line_id, qty > 0) when not whole
-- Reply: {'new'|'dup', {released qty, settled 0|1}, fields before, fields after}
--   settled: as in deduct.lua
local inv, holds, hexp, orec = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nonneg(ARGV[1], 'now_ms')
local retention = pos(ARGV[2], 'retention')
local op = id(ARGV[3], 'op id')
local whole = ARGV[4] == '1'
local m = nonneg(ARGV[5], 'line count')
local req = {}
for i = 1, m do
  req[i] = { id(ARGV[4 + 2 * i], 'line_id'), pos(ARGV[5 + 2 * i], 'quantity') }
end

local t, before = load(inv)
local expired = expire_holds(inv, holds, hexp, t, now)
local prev = rget(orec, 'x:' .. op)
if prev then
  if expired > 0 then bump(inv) end
  return { 'dup', split(prev), before, redis.call('HGETALL', inv) }
end
local released = 0
if rget(orec, 'st') == 'r' then
  if whole then
    for _, l in ipairs(split(rget(orec, 'ln'))) do
      released = released + release_line(inv, t, orec, l, alloc_sum(ralloc(orec, 'a:' .. l)))
    end
  else
    for _, r in ipairs(req) do
      if line_known(orec, r[1]) then
        released = released + release_line(inv, t, orec, r[1], r[2])
      end
    end
  end
end
local res = finish_op(inv, orec, op, { I(released) }, released > 0 or expired > 0, retention)
return { 'new', res, before, redis.call('HGETALL', inv) }
