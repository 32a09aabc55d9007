-- Helpers for one order's record on one sku, prepended after lib.lua to the
-- order scripts (reserve, abort, release, deduct, restock).
--
-- rv:{T}:o:<order_id> hash:
--   st        r (reserved) | x (rejected) | a (aborted: compensated or
--             tombstoned) | n (no placement here: only shipments/refunds)
--   c         1 when the reservation is counted in the sku's reserved
--   rej       reason US available, when st = x
--   ln        line ids in order, US-separated
--   q:<line>  ordered qty          o:<line>  allocation at confirmation
--   a:<line>  allocation still reserved (loc US qty ...)
--   ob:/op:<line> units beyond stock at confirmation (backorder/preorder)
--   b:/p:<line>   of those, still outstanding
--   s:<line>  shipped (loc US qty ...)   k:<line> restocked (loc US qty ...)
--   f:<line>  refunded qty
--   x:<op>    stored reply of a cancel/shipment/credit-memo op on this sku
--   hold      the cart hold the placement consumed (cart US hold record)
--   rh        expiry of that hold when compensation gave it back (abort.lua)

local function rget(orec, f)
  return redis.call('HGET', orec, f)
end

local function rnum(orec, f)
  return tonumber(rget(orec, f) or '0')
end

local function ralloc(orec, f)
  return alloc_parse(split(rget(orec, f)), 1)
end

-- The stored outcome of the placement on this sku, for replies and repeats.
local function placement_detail(orec)
  local st = rget(orec, 'st')
  if st == 'r' then
    local out = { 'r', rget(orec, 'c') }
    local lines = split(rget(orec, 'ln'))
    out[#out + 1] = I(#lines)
    for _, l in ipairs(lines) do
      out[#out + 1] = l
      out[#out + 1] = rget(orec, 'q:' .. l)
      out[#out + 1] = rget(orec, 'o:' .. l) or ''
      out[#out + 1] = rget(orec, 'ob:' .. l) or '0'
      out[#out + 1] = rget(orec, 'op:' .. l) or '0'
    end
    return out
  elseif st == 'x' then
    local rej = split(rget(orec, 'rej'))
    return { 'x', rej[1], rej[2] }
  elseif st == 'a' then
    return { 'a' }
  end
  return { 'n' }
end

-- Releases outstanding backorder/preorder units of a line first, as the
-- `got` units leave its reservation.
local function release_beyond(inv, t, orec, line, got)
  for _, k in ipairs({ 'b', 'p' }) do
    local v = rnum(orec, k .. ':' .. line)
    if v > 0 and got > 0 then
      local m = math.min(v, got)
      redis.call('HSET', orec, k .. ':' .. line, I(v - m))
      local f = k .. 'u'
      local u = hnum(t, f) - m
      t[f] = I(u)
      redis.call('HSET', inv, f, I(u))
      got = got - m
    end
  end
end

-- Releases up to n units of a line's reservation, last location first.
-- Returns the units released.
local function release_line(inv, t, orec, line, n)
  local a = ralloc(orec, 'a:' .. line)
  local left = n
  local rel = {}
  for i = #a - 1, 1, -2 do
    if left <= 0 then break end
    local m = math.min(a[i + 1], left)
    a[i + 1] = a[i + 1] - m
    left = left - m
    if m > 0 then alloc_add(rel, a[i], m) end
  end
  if rget(orec, 'c') == '1' then apply_alloc(inv, t, rel, -1) end
  redis.call('HSET', orec, 'a:' .. line, alloc_str(a))
  local got = n - left
  if rget(orec, 'c') == '1' then release_beyond(inv, t, orec, line, got) end
  return got
end

-- Settled: nothing of this order is reserved on this sku any more.
local function settled(orec)
  if rget(orec, 'st') ~= 'r' then return true end
  for _, l in ipairs(split(rget(orec, 'ln'))) do
    if alloc_sum(ralloc(orec, 'a:' .. l)) > 0 then return false end
  end
  return true
end

local function line_known(orec, line)
  return rget(orec, 'st') == 'r' and rget(orec, 'q:' .. line) ~= false
end

-- Ends an op on an order record: remember its reply, set the record to
-- expire once settled, bump the version if the sku changed. The reply's
-- settled flag is 1 only for a sku the placement reserved: a line of a sku
-- the order does not have (shipped from free stock, or refused) must not
-- count towards settling the order.
local function finish_op(inv, orec, op, res, changed, retention)
  local s = settled(orec)
  res[#res + 1] = (s and rget(orec, 'st') == 'r') and '1' or '0'
  redis.call('HSET', orec, 'x:' .. op, join(res))
  if rget(orec, 'st') == false then redis.call('HSET', orec, 'st', 'n') end
  if s then redis.call('PEXPIRE', orec, retention) end
  if changed then bump(inv) end
  return res
end
