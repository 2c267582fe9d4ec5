-- Tollgate prepaid credits, spent in the same atomic step as the token
-- buckets. The wrapper runs before the bucket script (lua/token_bucket.lua,
-- embedded by the proxy as the local function `buckets` below, with KEYS and
-- ARGV narrowed to the buckets' own):
--
-- KEYS[1..n]         the bucket keys (see lua/token_bucket.lua)
-- KEYS[n+1]          the holder's balance key (same hash tag)
-- KEYS[n+2]          the start of the period it was last refilled for
-- ARGV[1..5n]        the bucket script's arguments
-- ARGV[5n+1]         the request's cost in credits
-- ARGV[5n+2]         the refill's amount, -1 without a refill
-- ARGV[5n+3]         the start (s) of the refill's current period
--
-- A refill sets the balance to its amount once per period: only when the
-- period starts later than the last refill (a proxy whose clock lags never
-- refills twice).
--
-- Returns {-1, balance} when the balance is short of the cost (nothing is
-- taken from any bucket), else the bucket script's reply followed by the
-- balance after the request (spent only if every bucket admitted).
local nk = #KEYS - 2
local balance_key = KEYS[nk + 1]
local refilled_key = KEYS[nk + 2]
local na = #ARGV - 3
local cost = tonumber(ARGV[na + 1])
if tonumber(ARGV[na + 2]) >= 0 then
  local last = redis.call('GET', refilled_key)
  if not last or tonumber(last) < tonumber(ARGV[na + 3]) then
    -- The argument strings themselves: exact for any 64-bit amount.
    redis.call('SET', balance_key, ARGV[na + 2])
    redis.call('SET', refilled_key, ARGV[na + 3])
  end
end
local balance = tonumber(redis.call('GET', balance_key) or '0')
if balance < cost then
  return {-1, balance}
end
local out = {}
local all = true
if nk > 0 then
  local keys = {}
  for i = 1, nk do
    keys[i] = KEYS[i]
  end
  local argv = {}
  for i = 1, na do
    argv[i] = ARGV[i]
  end
  out = buckets(keys, argv)
  for i = 1, nk do
    if out[5 * i - 4] ~= 1 then
      all = false
    end
  end
end
if all and cost > 0 then
  balance = redis.call('DECRBY', balance_key, cost)
end
out[#out + 1] = balance
return out
