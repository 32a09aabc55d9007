-- Shared helpers, prepended to every per-sku script (see src/store/scripts.rs).
--
-- Key layout for one sku S (T is S itself, or % and its hex form when S has braces or starts with %,
-- so every key of a sku hashes to the same Redis Cluster slot):
--   rv:{T}:inv      hash  ex=1, v=version, cfg=settings, bu/pu=units beyond
--                         stock outstanding as backorders/preorders,
--                         h:<loc>=on_hand, r:<loc>=reserved, s:<loc>=0 when
--                         out of stock (absent = in stock), f:<channel>=where
--                         its availability last landed (avail_fence.lua)
--   rv:{T}:holds    hash  cart_id -> qty US expires_ms US (loc US qty)*
--   rv:{T}:hexp     zset  cart_id scored by expires_ms
--   rv:{T}:o:<oid>  hash  this order's lines on this sku (see order.lua)
--   rv:{T}:e:<id>   str   idempotency record of one event on this sku
--   rv:{T}:hc:<cart> str  the order record key that turned this cart's hold
--                         into its reservation, until the hold's expiry;
--                         deleted by the cart's next hold or release
-- Quantities are integers in ten-thousandths. Lua numbers are doubles and
-- tostring() prints only 14 digits, so every number written goes through I().
-- US (\31) separates fields; ids cannot contain control characters.

local US = '\31'

local function I(n)
  return string.format('%d', n)
end

local function split(s)
  local out = {}
  if s == nil or s == false or s == '' then return out end
  local start = 1
  while true do
    local i = string.find(s, US, start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

local function join(t)
  return table.concat(t, US)
end

-- Argument checks: all happen before the first write.
local function num(v, what)
  local n = tonumber(v)
  if n == nil or n ~= math.floor(n) then
    return error('reservoir: ' .. what .. ' must be an integer, got ' .. tostring(v))
  end
  return n
end

local function nonneg(v, what)
  local n = num(v, what)
  if n < 0 then return error('reservoir: ' .. what .. ' must be >= 0, got ' .. tostring(v)) end
  return n
end

local function pos(v, what)
  local n = num(v, what)
  if n <= 0 then return error('reservoir: ' .. what .. ' must be > 0, got ' .. tostring(v)) end
  return n
end

local function id(v, what)
  if v == nil or v == '' or string.find(v, '[%z\1-\31]') then
    return error('reservoir: ' .. what .. ' must be a non-empty id without control characters')
  end
  return v
end

-- The sku's hash as a table, and as the raw field list for the reply.
local function load(inv)
  local raw = redis.call('HGETALL', inv)
  local t = {}
  for i = 1, #raw, 2 do t[raw[i]] = raw[i + 1] end
  return t, raw
end

local function hnum(t, f)
  return tonumber(t[f] or '0')
end

-- Whether on hand `h` at `loc` would take the sku's on hand over all its
-- locations past Qty::MAX (10^10 units, 10^14 raw). That sum bounds every
-- total computed from the hash, and below it Lua's doubles are exact.
local function over_max(t, loc, h)
  local total = h
  for f, v in pairs(t) do
    if f ~= 'h:' .. loc and string.sub(f, 1, 2) == 'h:' then total = total + tonumber(v) end
  end
  return total > 100000000000000
end

-- cfg = tracking US bo_enabled US bo_limit US po_enabled US po_limit US oos US low
local function cfg(t)
  local c = split(t['cfg'] or 'q\31' .. '0\31\31' .. '0\31\31' .. '0\31')
  return {
    trk = c[1],
    bo = c[2] == '1', bo_lim = tonumber(c[3] or ''),
    po = c[4] == '1', po_lim = tonumber(c[5] or ''),
    oos = tonumber(c[6] or '0') or 0,
  }
end

local function in_stock(t, loc)
  return t['h:' .. loc] ~= nil and t['s:' .. loc] ~= '0'
end

-- alloc list {loc, qty, loc, qty, ...} <-> string
local function alloc_add(list, loc, q)
  for i = 1, #list, 2 do
    if list[i] == loc then list[i + 1] = list[i + 1] + q; return end
  end
  list[#list + 1] = loc
  list[#list + 1] = q
end

local function alloc_parse(fields, from)
  local list = {}
  for i = from, #fields, 2 do
    list[#list + 1] = fields[i]
    list[#list + 1] = tonumber(fields[i + 1])
  end
  return list
end

local function alloc_str(list)
  local out = {}
  for i = 1, #list, 2 do
    if list[i + 1] ~= 0 then
      out[#out + 1] = list[i]
      out[#out + 1] = I(list[i + 1])
    end
  end
  return join(out)
end

local function alloc_sum(list)
  local s = 0
  for i = 2, #list, 2 do s = s + list[i] end
  return s
end

-- Adds `sign * qty` to reserved at every location of an allocation.
local function apply_alloc(inv, t, list, sign)
  for i = 1, #list, 2 do
    if list[i + 1] ~= 0 then
      local f = 'r:' .. list[i]
      local v = hnum(t, f) + sign * list[i + 1]
      t[f] = I(v)
      redis.call('HSET', inv, f, I(v))
    end
  end
end

-- Releases every hold whose expiry is at or before now. Each hold expires
-- once, so the work is bounded by what was held. Returns how many.
local function expire_holds(inv, holds, hexp, t, now)
  local due = redis.call('ZRANGEBYSCORE', hexp, '-inf', I(now))
  for _, cart in ipairs(due) do
    local rec = redis.call('HGET', holds, cart)
    if rec then
      apply_alloc(inv, t, alloc_parse(split(rec), 3), -1)
      redis.call('HDEL', holds, cart)
    end
    redis.call('ZREM', hexp, cart)
  end
  return #due
end

-- The cart's current hold on this sku: qty, expiry, allocation.
local function hold_of(holds, cart)
  if cart == nil or cart == '' then return nil end
  local rec = redis.call('HGET', holds, cart)
  if not rec then return nil end
  local f = split(rec)
  return { qty = tonumber(f[1]), exp = tonumber(f[2]), alloc = alloc_parse(f, 3) }
end

-- Free stock per selling location of the channel, with `own` (an allocation
-- about to be released) added back. Returns the list and the clamped
-- channel availability.
local function channel_free(t, locs, own)
  local c = cfg(t)
  local frees, total = {}, 0
  for _, loc in ipairs(locs) do
    if in_stock(t, loc) then
      local f = hnum(t, 'h:' .. loc) - hnum(t, 'r:' .. loc)
      if own then
        for i = 1, #own, 2 do
          if own[i] == loc then f = f + own[i + 1] end
        end
      end
      frees[#frees + 1] = { loc, f }
      total = total + f
    end
  end
  local avail = total - c.oos
  if avail < 0 then avail = 0 end
  return frees, avail
end

-- Takes up to `want` units from the free list in priority order, appending
-- to `list`. Mutates the free list. Returns what was taken.
local function take(frees, want, list)
  local got = 0
  for _, fr in ipairs(frees) do
    if got >= want then break end
    if fr[2] > 0 then
      local n = math.min(fr[2], want - got)
      fr[2] = fr[2] - n
      got = got + n
      alloc_add(list, fr[1], n)
    end
  end
  return got
end

local function any_in_stock(t, locs)
  for _, loc in ipairs(locs) do
    if in_stock(t, loc) then return loc end
  end
  return nil
end

local function bump(inv)
  return redis.call('HINCRBY', inv, 'v', 1)
end

-- Idempotency: a stored reply for this event on this sku, or nil.
local function seen(ekey)
  local r = redis.call('GET', ekey)
  if r then return split(r) end
  return nil
end

local function remember(ekey, fields, ttl_ms)
  redis.call('SET', ekey, join(fields), 'PX', ttl_ms)
end
