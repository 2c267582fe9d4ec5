-- Tollgate cost settlement (routes[].cost): give back or take more tokens
-- from the buckets a request reserved from, once its response says what it
-- really cost. The same arithmetic as `settle` in core/src/cost.rs, in µs on
-- Redis' clock (see lua/token_bucket.lua for the bucket format: one TAT).
--
-- KEYS[i]            the bucket key of limit i (one hash tag: one slot)
-- ARGV[4i-3]         emission interval T of limit i in µs (>= 1)
-- ARGV[4i-2]         burst (capacity in tokens)
-- ARGV[4i-1]         the request's reservation in tokens: also the most
--                    debt a take may leave (TAT <= now + (burst + reserve) T)
-- ARGV[4i]           tokens to take (> 0) or give back (< 0)
-- ARGV[4n+1]         optional, tests only: "now" in µs instead of TIME
--
-- A calendar quota (as in lua/token_bucket.lua) is sent with a negative
-- interval, -T its key's TTL in ms; its key names the admission's period;
-- "burst" is the quota, the stored value the uses counted. A return lowers
-- the count (never below 0), a take raises it, never beyond quota +
-- reserve (`settle_quota` in core/src/quota/mod.rs). A missing count (reset
-- by an admin meanwhile) is left alone, as the local limiter does.
--
-- Returns 2 integers per limit, in KEYS order:
--   applied          tokens actually taken (> 0) or given back (< 0): a
--                    return never moves the TAT below now (tokens that
--                    refilled meanwhile are not given twice; a token partly
--                    refilled counts as given back), a take takes whole
--                    tokens, never beyond the debt bound
--   remaining        tokens left after the settlement (0 while in debt)

local n = #KEYS
local now
if #ARGV > 4 * n then
  now = tonumber(ARGV[4 * n + 1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local stored = redis.call('MGET', unpack(KEYS))
local out = {}

local function settle_quota(i, ttl, quota, reserve, delta)
  local used = tonumber(stored[i])
  local applied = 0
  if used == nil then
    used = 0
  elseif delta < 0 then
    applied = -math.min(-delta, used)
  elseif delta > 0 then
    applied = math.max(math.min(delta, quota + reserve - used), 0)
  end
  if applied ~= 0 then
    redis.call('SET', KEYS[i], string.format('%d', used + applied), 'PX', ttl)
  end
  out[2 * i - 1] = applied
  out[2 * i] = math.max(quota - used - applied, 0)
end

local function settle_bucket(i, t, burst, reserve, delta)
  local tat = tonumber(stored[i]) or 0
  local applied = 0
  local new_tat = tat
  if delta < 0 and tat > now then
    new_tat = tat + delta * t
    if new_tat < now then
      new_tat = now
    end
    applied = -math.ceil((tat - new_tat) / t)
  elseif delta > 0 then
    local base = tat
    if now > base then
      base = now
    end
    local ceiling = now + (burst + reserve) * t
    local room = 0
    if ceiling > base then
      room = math.floor((ceiling - base) / t)
    end
    local take = delta
    if room < take then
      take = room
    end
    new_tat = base + take * t
    applied = take
  end
  if applied ~= 0 then
    local ttl_us = new_tat - now
    if ttl_us > 0 then
      redis.call('SET', KEYS[i], string.format('%d', new_tat),
        'PX', math.ceil(ttl_us / 1000))
    else
      redis.call('DEL', KEYS[i])
    end
  end
  local left = burst * t - (math.max(new_tat, now) - now)
  if left < 0 then
    left = 0
  end
  out[2 * i - 1] = applied
  out[2 * i] = math.floor(left / t)
end

for i = 1, n do
  local t = tonumber(ARGV[4 * i - 3])
  local burst = tonumber(ARGV[4 * i - 2])
  local reserve = tonumber(ARGV[4 * i - 1])
  local delta = tonumber(ARGV[4 * i])
  if t < 0 then
    settle_quota(i, -t, burst, reserve, delta)
  else
    settle_bucket(i, t, burst, reserve, delta)
  end
end

return out
