-- Tollgate prepaid credits, spent in the same atomic step as the token
-- buckets. The wrapper runs before the bucket script (lua/token_bucket.lua,
-- embedded by the proxy as the local function `buckets` below, with KEYS and
-- ARGV narrowed to the buckets' own):
--
-- KEYS[1..n]         the bucket keys (see lua/token_bucket.lua)
-- KEYS[n+1]          the subject's balance key (same hash tag)
-- ARGV[1..5n]        the bucket script's arguments
-- ARGV[5n+1]         the request's cost in credits
--
-- Returns {-1, balance} when the balance is short of the cost (nothing is
-- taken from any bucket), else the bucket script's reply followed by the
-- balance after the request (spent only if every bucket admitted).
local nk = #KEYS - 1
local balance_key = KEYS[nk + 1]
local cost = tonumber(ARGV[#ARGV])
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
  for i = 1, #ARGV - 1 do
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
