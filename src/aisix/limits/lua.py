"""The two Redis Lua scripts: admit a whole layer set atomically, and finish its reservations.

`ACQUIRE` reads the server clock (`TIME`, plus a test-only offset in microseconds), derives
each check's window exactly as `aisix.limits.windows.bounds` does, refuses if any enforced
check would exceed its limit (nothing written), else reserves in every bucket and sets expiries
just after each window. `FINISH` applies one settle / fail / rollback to the keys an admission
returned; a key whose window has already expired is left alone.
"""

ACQUIRE = """
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
local now = now_us / 1000000
local member, ttl, dry = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local DAY = 86400

local function bounds(code)
  if code > 0 then
    local s = math.floor(now / code) * code
    return s, s + code
  elseif code == -7 then
    local span = 7 * DAY
    local s = math.floor((now - 4 * DAY) / span) * span + 4 * DAY
    return s, s + span
  elseif code == -1 then
    -- civil date from days since the epoch (H. Hinnant's algorithm)
    local days = math.floor(now / DAY)
    local z = days + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
      - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local d = doy - math.floor((153 * mp + 2) / 5) + 1
    local m = mp < 10 and mp + 3 or mp - 9
    local y = yoe + era * 400
    if m <= 2 then y = y + 1 end
    local lengths = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
    local len = lengths[m]
    if m == 2 and ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) then len = 29 end
    local s = (days - d + 1) * DAY
    return s, s + len * DAY
  end
  return 0, 0
end

local out, full, refused = {-1, now_us}, {}, -1
for i = 1, #KEYS do
  local b = 5 + (i - 1) * 5
  local dim, limit, amount = ARGV[b], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local used, reserved, s, e = 0, 0, 0, 0
  if dim == 'c' then
    full[i] = KEYS[i]
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    used = redis.call('ZCARD', KEYS[i])
  else
    s, e = bounds(tonumber(ARGV[b + 1]))
    full[i] = KEYS[i] .. ':' .. string.format('%d', s)
    if dim == 's' then
      local h = redis.call('HMGET', full[i], 's', 'r')
      used, reserved = tonumber(h[1] or '0'), tonumber(h[2] or '0')
    else
      used = tonumber(redis.call('GET', full[i]) or '0')
    end
  end
  if refused < 0 and ARGV[b + 4] == '1' and used + reserved + amount > limit then
    refused = i - 1
  end
  out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = used, reserved, s, e
end
out[1] = refused
if refused >= 0 or dry then return out end
for i = 1, #KEYS do
  local b = 5 + (i - 1) * 5
  local dim, amount = ARGV[b], tonumber(ARGV[b + 3])
  local e = out[2 + (i - 1) * 4 + 4]
  if dim == 'c' then
    redis.call('ZADD', full[i], now + ttl, member)
    redis.call('EXPIRE', full[i], ttl + 1)
  elseif dim == 's' then
    redis.call('HINCRBY', full[i], 'r', amount)
    if e > 0 then redis.call('EXPIRE', full[i], math.ceil(e - now) + 3600) end
  else
    redis.call('INCRBY', full[i], amount)
    redis.call('EXPIRE', full[i], math.ceil(e - now) + 1)
  end
end
return out
"""

FINISH = """
local mode, member = ARGV[1], ARGV[2]
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 3
  local dim, amount, actual = ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  if dim == 'c' then
    redis.call('ZREM', KEYS[i], member)
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    if dim == 's' then
      redis.call('HINCRBY', KEYS[i], 'r', -amount)
      if mode == 's' and actual > 0 then redis.call('HINCRBY', KEYS[i], 's', actual) end
    elseif dim == 't' then
      local delta = -amount
      if mode == 's' then delta = actual - amount end
      if delta ~= 0 then redis.call('INCRBY', KEYS[i], delta) end
    elseif mode == 'r' then
      redis.call('DECRBY', KEYS[i], amount)
    end
  end
end
return 1
"""
