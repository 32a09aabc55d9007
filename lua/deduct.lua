-- shipment.created, one line: on_hand at the location goes down by qty and
-- the order line's reservation by as much as it still has (at this location
-- first, then its other locations); the rest comes from unreserved stock.
-- KEYS: 1 inv, 2 holds, 3 hexp, 4 order record
-- ARGV: 1 now_ms, 2 retention ms, 3 op id (shipment_id US line_id), 4 line_id,
--       5 location, 6 qty > 0
-- Reply: {'new'|'dup', {ok|insufficient_on_hand, on_hand at the location,
--         settled 0|1}, fields before, fields after}
--   settled: 1 when the order reserved this sku and nothing of it is left
--   reserved (0 for a sku the order does not have)
local inv, holds, hexp, orec = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nonneg(ARGV[1], 'now_ms')
local retention = pos(ARGV[2], 'retention')
local op = ARGV[3]
if op == nil or op == '' then return error('reservoir: op id must not be empty') end
local line = id(ARGV[4], 'line_id')
local loc = id(ARGV[5], 'location')
local qty = pos(ARGV[6], 'quantity')

local t, before = load(inv)
local expired = expire_holds(inv, holds, hexp, t, now)
local prev = rget(orec, 'x:' .. op)
if prev then
  if expired > 0 then bump(inv) end
  return { 'dup', split(prev), before, redis.call('HGETALL', inv) }
end
local counts = cfg(t).trk == 'q'
local h = hnum(t, 'h:' .. loc)
if counts and h - qty < 0 then
  local res = finish_op(inv, orec, op, { 'insufficient_on_hand', I(h) }, expired > 0, retention)
  return { 'new', res, before, redis.call('HGETALL', inv) }
end
if counts then
  redis.call('HSET', inv, 'h:' .. loc, I(h - qty))
  t['h:' .. loc] = I(h - qty)
end
if line_known(orec, line) then
  -- Consume the reservation at the shipping location first, then the others.
  local a = ralloc(orec, 'a:' .. line)
  local order = {}
  for i = 1, #a, 2 do if a[i] == loc then order[#order + 1] = i end end
  for i = 1, #a, 2 do if a[i] ~= loc then order[#order + 1] = i end end
  local left, used = qty, {}
  for _, i in ipairs(order) do
    if left <= 0 then break end
    local n = math.min(a[i + 1], left)
    if n > 0 then
      a[i + 1] = a[i + 1] - n
      left = left - n
      alloc_add(used, a[i], n)
    end
  end
  redis.call('HSET', orec, 'a:' .. line, alloc_str(a))
  if rget(orec, 'c') == '1' then
    apply_alloc(inv, t, used, -1)
    release_beyond(inv, t, orec, line, alloc_sum(used))
  end
  local s = ralloc(orec, 's:' .. line)
  alloc_add(s, loc, qty)
  redis.call('HSET', orec, 's:' .. line, alloc_str(s))
end
local res = finish_op(inv, orec, op, { 'ok', I(counts and h - qty or h) }, true, retention)
return { 'new', res, before, redis.call('HGETALL', inv) }
