-- credit_memo.created, one line: refunded units not yet shipped release the
-- line's reservation; refunded units already shipped go back to on_hand when
-- back_to_stock (at the given location, else where they shipped from).
-- KEYS: 1 inv, 2 holds, 3 hexp, 4 order record
-- ARGV: 1 now_ms, 2 retention ms, 3 op id (credit_memo_id US line_id), 4 line_id,
--       5 qty > 0, 6 back_to_stock (0|1), 7 location ('' = where shipped from)
-- Reply: {'new'|'dup', {ok|over_refund, released, restocked, settled 0|1},
--         fields before, fields after}
--   settled: as in deduct.lua (0 for a sku the order does not have)
local inv, holds, hexp, orec = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = nonneg(ARGV[1], 'now_ms')
local retention = pos(ARGV[2], 'retention')
local op = ARGV[3]
if op == nil or op == '' then return error('reservoir: op id must not be empty') end
local line = id(ARGV[4], 'line_id')
local qty = pos(ARGV[5], 'quantity')
local back = ARGV[6] == '1'
local to = ARGV[7]
if to ~= '' then id(to, 'location') end

local t, before = load(inv)
local expired = expire_holds(inv, holds, hexp, t, now)
local prev = rget(orec, 'x:' .. op)
if prev then
  if expired > 0 then bump(inv) end
  return { 'dup', split(prev), before, redis.call('HGETALL', inv) }
end
local ordered = 0
if line_known(orec, line) then ordered = rnum(orec, 'q:' .. line) end
local refunded = rnum(orec, 'f:' .. line)
if refunded + qty > ordered then
  local res = finish_op(inv, orec, op, { 'over_refund', '0', '0' }, expired > 0, retention)
  return { 'new', res, before, redis.call('HGETALL', inv) }
end
local released = release_line(inv, t, orec, line, qty)
local rest = qty - released
local restocked = 0
if back and rest > 0 and cfg(t).trk == 'q' then
  local s, k = ralloc(orec, 's:' .. line), ralloc(orec, 'k:' .. line)
  for i = 1, #s, 2 do
    if rest <= 0 then break end
    local done = 0
    for j = 1, #k, 2 do if k[j] == s[i] then done = k[j + 1] end end
    local n = math.min(rest, s[i + 1] - done)
    if n > 0 then
      local target = s[i]
      if to ~= '' then target = to end
      local f = 'h:' .. target
      local v = hnum(t, f) + n
      t[f] = I(v)
      redis.call('HSET', inv, f, I(v))
      alloc_add(k, s[i], n)
      rest = rest - n
      restocked = restocked + n
    end
  end
  redis.call('HSET', orec, 'k:' .. line, alloc_str(k))
end
redis.call('HSET', orec, 'f:' .. line, I(refunded + qty))
local res = finish_op(inv, orec, op, { 'ok', I(released), I(restocked) }, released > 0 or restocked > 0 or expired > 0, retention)
return { 'new', res, before, redis.call('HGETALL', inv) }
