-- Tollgate token buckets (GCRA), all limits of one request in one atomic step.
--
-- The same arithmetic as `check_bucket` / `decide` in core/src/limits.rs, in
-- microseconds instead of nanoseconds: Lua numbers are doubles, exact only up
-- to 2^53, and "now" in ns since the epoch (~1.7e18) is not; in µs (~1.7e15)
-- it is. The caller (proxy/src/limiter/redis.rs) keeps every span it sends
-- (interval × burst, interval × cost) ≤ 2^50 µs (+ one interval), so every
-- sum below stays exact.
--
-- A bucket is one integer: its TAT (theoretical arrival time, µs on Redis'
-- clock): the instant the bucket is full again. A missing key is a full
-- bucket. Time comes from Redis (TIME), so the proxies' clocks don't matter.
-- Redis >= 5 replicates scripts by their effects (the default since 7.0), so
-- reading TIME before writing needs no redis.replicate_commands().
--
-- KEYS[i]            the bucket key of limit i (all keys of one request share
--                    one hash tag, so they are in one cluster slot)
-- ARGV[5i-4]         emission interval T of limit i in µs (>= 1)
-- ARGV[5i-3]         burst (capacity in tokens)
-- ARGV[5i-2]         cost of this request in tokens (0: only give tokens back)
-- ARGV[5i-1]         tokens the proxy gives back first: the unspent rest of
--                    its lease of this bucket (0 without leases)
-- ARGV[5i]           tokens the proxy wants (a lease; <= cost: exactly cost)
-- ARGV[5n+1]         optional, tests only: "now" in µs instead of TIME
--
-- A calendar quota (proxy/src/limiter/quota.rs) is sent with a negative
-- interval: -T is its key's TTL in ms (the period's end plus a margin; the
-- key names the period, so each period starts at 0). Its "burst" is the
-- quota, the stored value the uses counted; its lease arguments are
-- ignored: a quota grants exactly the cost, never a lease. Its reply:
-- allowed, remaining, reset 0, retry 0 (-1: cost > quota), granted. Time
-- plays no part (the proxy computes the period).
--
-- Returns a flat array, 5 integers per limit, in KEYS order:
--   allowed          1 if this bucket alone would admit the request, else 0
--   remaining        tokens left after the grant (if this bucket admits)
--                    or now (if it refuses)
--   reset            µs until the bucket is full again (after the grant
--                    if this bucket admits)
--   retry            µs until this bucket would admit the request; 0 if it
--                    admits now, -1 if it never can (cost > burst)
--   granted          tokens this bucket grants (cost, or a lease: at most
--                    the wanted tokens and a quarter of what it holds, a
--                    multiple of cost; see proxy/src/limiter/redis/lease)
-- Returned tokens go back in any case (the TAT moves back by ret × T, never
-- below now: a full bucket stays full). The request is admitted only if
-- every bucket admits it; only then are the granted tokens taken (SET … PX
-- until the bucket is full again). A refused request takes nothing.

local n = #KEYS
local now
if #ARGV > 5 * n then
  -- Tests only: an explicit "now", to compare with the local limiter at
  -- chosen instants. The proxy never sends it.
  now = tonumber(ARGV[5 * n + 1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local stored = redis.call('MGET', unpack(KEYS))
local out = {}
local tats = {}
local new_tats = {}
local given_back = {}
local all = true
local share = 4
local quota_ttl = {}
local buckets = {}

for i = 1, n do
  local t = tonumber(ARGV[5 * i - 4])
  if t < 0 then
    local quota = tonumber(ARGV[5 * i - 3])
    local cost = tonumber(ARGV[5 * i - 2])
    local used = tonumber(stored[i]) or 0
    local j = 5 * i - 4
    quota_ttl[i] = -t
    if cost <= quota and used + cost <= quota then
      out[j] = 1
      out[j + 1] = quota - used - cost
      out[j + 3] = 0
      out[j + 4] = cost
      new_tats[i] = used + cost
    else
      all = false
      local left = quota - used
      if left < 0 then
        left = 0
      end
      out[j] = 0
      out[j + 1] = left
      out[j + 3] = 0
      if cost > quota then
        out[j + 3] = -1
      end
      out[j + 4] = 0
    end
    out[j + 2] = 0
  else
    table.insert(buckets, i)
  end
end

for _, i in ipairs(buckets) do
  local t = tonumber(ARGV[5 * i - 4])
  local burst = tonumber(ARGV[5 * i - 3])
  local cost = tonumber(ARGV[5 * i - 2])
  local ret = tonumber(ARGV[5 * i - 1])
  local want = tonumber(ARGV[5 * i])
  local tat = tonumber(stored[i]) or 0
  if ret > burst then
    ret = burst
  end
  if ret > 0 and tat > now then
    tat = tat - ret * t
    if tat < now then
      tat = now
    end
    given_back[i] = true
  end
  tats[i] = tat
  local capacity = burst * t
  local base = tat
  if now > base then
    base = now
  end
  local used = base - now
  local needed = used + cost * t
  local j = 5 * i - 4
  if cost <= burst and needed <= capacity then
    local avail = math.floor((capacity - used) / t)
    local grant = cost
    if want > cost and cost > 0 then
      local g = math.floor(avail / share)
      if want < g then
        g = want
      end
      if g > cost then
        grant = g - (g % cost)
      end
    end
    local new_tat = base + grant * t
    out[j] = 1
    out[j + 1] = math.floor((capacity - (new_tat - now)) / t)
    out[j + 2] = new_tat - now
    out[j + 3] = 0
    out[j + 4] = grant
    new_tats[i] = new_tat
  else
    all = false
    local left = capacity - used
    if left < 0 then
      left = 0
    end
    out[j] = 0
    out[j + 1] = math.floor(left / t)
    out[j + 2] = used
    if cost > burst then
      out[j + 3] = -1
    else
      out[j + 3] = needed - capacity
    end
    out[j + 4] = 0
  end
end

for i, ttl in pairs(quota_ttl) do
  if all then
    redis.call('SET', KEYS[i], string.format('%d', new_tats[i]), 'PX', ttl)
  end
end

for _, i in ipairs(buckets) do
  local tat = nil
  if all then
    tat = new_tats[i]
  elseif given_back[i] then
    tat = tats[i]
  end
  if tat then
    local ttl_us = tat - now
    if ttl_us > 0 then
      -- %d: tostring() would print large numbers in exponent notation.
      redis.call('SET', KEYS[i], string.format('%d', tat),
        'PX', math.ceil(ttl_us / 1000))
    else
      redis.call('DEL', KEYS[i])
    end
  end
end

return out
