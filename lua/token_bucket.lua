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
-- ARGV[3i-2]         emission interval T of limit i in µs (>= 1)
-- ARGV[3i-1]         burst (capacity in tokens)
-- ARGV[3i]           cost of this request in tokens
-- ARGV[3n+1]         optional, tests only: "now" in µs instead of TIME
--
-- Returns a flat array, 4 integers per limit, in KEYS order:
--   allowed          1 if this bucket alone would admit the request, else 0
--   remaining        tokens left after the request (if this bucket admits)
--                    or now (if it refuses)
--   reset            µs until the bucket is full again (after the request
--                    if this bucket admits)
--   retry            µs until this bucket would admit the request; 0 if it
--                    admits now, -1 if it never can (cost > burst)
-- The request is admitted only if every bucket admits it; only then are the
-- new TATs written (SET … PX until the bucket is full again). A refused
-- request changes nothing.

local n = #KEYS
local now
if #ARGV > 3 * n then
  -- Tests only: an explicit "now", to compare with the local limiter at
  -- chosen instants. The proxy never sends it.
  now = tonumber(ARGV[3 * n + 1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local stored = redis.call('MGET', unpack(KEYS))
local out = {}
local new_tats = {}
local all = true

for i = 1, n do
  local t = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(stored[i]) or 0
  local capacity = burst * t
  local base = tat
  if now > base then
    base = now
  end
  local new_tat = base + cost * t
  local needed = new_tat - now
  local j = 4 * i - 3
  if cost <= burst and needed <= capacity then
    out[j] = 1
    out[j + 1] = math.floor((capacity - needed) / t)
    out[j + 2] = needed
    out[j + 3] = 0
    new_tats[i] = new_tat
  else
    all = false
    local used = base - now
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
  end
end

if all then
  for i = 1, n do
    local ttl_us = new_tats[i] - now
    if ttl_us > 0 then
      -- %d: tostring() would print large numbers in exponent notation.
      redis.call('SET', KEYS[i], string.format('%d', new_tats[i]),
        'PX', math.ceil(ttl_us / 1000))
    end
  end
end

return out
