-- Give credits back to a balance (findings B10: a request answered with a
-- status in its route's `refund_on` gets its reservation back), unless the
-- balance was refilled since (a refill due now replaces what was spent in
-- the period that is over: nothing to give back to it).
--
-- KEYS[1]  the holder's balance key
-- KEYS[2]  the start of the period it was last refilled for
-- ARGV[1]  the credits to give back
-- ARGV[2]  the refill's amount, -1 without a refill
-- ARGV[3]  the start (s) of the refill's current period
-- Returns the balance after.
if tonumber(ARGV[2]) >= 0 then
  local last = redis.call('GET', KEYS[2])
  if not last or tonumber(last) < tonumber(ARGV[3]) then
    return tonumber(redis.call('GET', KEYS[1]) or '0')
  end
end
return redis.call('INCRBY', KEYS[1], ARGV[1])
