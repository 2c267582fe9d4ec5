-- Tollgate per-key concurrency across proxies: one sorted set per key of the
-- requests in flight, each a "hold" whose score is the instant (ms on Redis'
-- clock) it expires unless its proxy renews it. A proxy that crashes stops
-- renewing, so its holds expire after one lease and free their slots.
-- Time comes from Redis (TIME); Redis >= 5 replicates scripts by effects.
--
-- KEYS[1]   the key's set, e.g. tg:{k42}:inflight
-- ARGV[1]   "acquire" or "renew"
-- acquire:  ARGV[2] max in flight, ARGV[3] lease ms, ARGV[4] hold id
--           -> 1 if the hold was added, 0 if `max` live holds exist already
-- renew:    ARGV[2] lease ms, ARGV[3..] hold ids
--           -> how many of them were still held (and got a new expiry)
--
-- Release is a plain ZREM of the hold id.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]

if op == 'acquire' then
  local max = tonumber(ARGV[2])
  local lease = tonumber(ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= max then
    return 0
  end
  redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
  -- The set itself goes when its last hold would have expired.
  if redis.call('PTTL', KEYS[1]) < lease then
    redis.call('PEXPIRE', KEYS[1], lease)
  end
  return 1
elseif op == 'renew' then
  local lease = tonumber(ARGV[2])
  local renewed = 0
  for i = 3, #ARGV do
    renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[i])
  end
  if renewed > 0 then
    redis.call('PEXPIRE', KEYS[1], lease)
  end
  return renewed
end
return redis.error_reply('unknown operation')
