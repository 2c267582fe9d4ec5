-- Reset or adjust one quota's period exactly once (issue #20): every proxy
-- sends every adjustment it reads; only the first call for an id changes
-- the count.
--
-- KEYS[1]  the quota's period key (its count)   KEYS[2]  the adjustment's marker
-- ARGV[1]  TTL in ms of both: until the period ends, plus a margin
-- ARGV[2]  'reset' or 'delta'                   ARGV[3]  uses added (negative: given back)
-- Returns the count after, or -1 if the adjustment was already applied.
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return -1
end
if ARGV[2] == 'reset' then
  redis.call('DEL', KEYS[1])
  return 0
end
local used = (tonumber(redis.call('GET', KEYS[1]) or '0') or 0) + tonumber(ARGV[3])
if used <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
-- %d: tostring() would print large numbers in exponent notation.
redis.call('SET', KEYS[1], string.format('%d', used), 'PX', ARGV[1])
return used
