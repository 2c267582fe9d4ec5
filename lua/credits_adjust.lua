-- Apply one credit adjustment exactly once (issue #20): every proxy sends
-- every adjustment it reads; only the first call for an id changes the
-- balance.
--
-- KEYS[1]  the subject's balance key    KEYS[2]  its set of applied ids
-- ARGV[1]  the adjustment's id          ARGV[2]  its delta
-- Returns the balance after.
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  return redis.call('INCRBY', KEYS[1], ARGV[2])
end
return tonumber(redis.call('GET', KEYS[1]) or '0')
