-- Apply one credit adjustment exactly once (issue #20): every proxy sends
-- every adjustment it reads; only the first call for an id changes the
-- balance. A refill due in the current period is applied first (see
-- lua/credits.lua), so a top-up made in a new period adds to its refill.
--
-- KEYS[1]  the holder's balance key     KEYS[2]  its set of applied ids
-- KEYS[3]  the start of the period it was last refilled for
-- ARGV[1]  the adjustment's id          ARGV[2]  its delta
-- ARGV[3]  the refill's amount, -1 without a refill
-- ARGV[4]  the start (s) of the refill's current period
-- Returns the balance after.
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  if tonumber(ARGV[3]) >= 0 then
    local last = redis.call('GET', KEYS[3])
    if not last or tonumber(last) < tonumber(ARGV[4]) then
      redis.call('SET', KEYS[1], ARGV[3])
      redis.call('SET', KEYS[3], ARGV[4])
    end
  end
  return redis.call('INCRBY', KEYS[1], ARGV[2])
end
return tonumber(redis.call('GET', KEYS[1]) or '0')
