-- Tollgate: read token buckets without taking (proxy.usage_path). Read-only:
-- never writes, so a caller asking for its own figures spends nothing.
-- Kept apart from token_bucket.lua (the admission script) on purpose.
--
-- KEYS[i]   the bucket key of limit i (one hash tag: one cluster slot)
-- ARGV[i]   optional: "q" if limit i is a calendar quota (its key names the
--           period; its value is the uses counted)
-- Returns one integer per key: µs until that bucket is full again (its TAT
-- minus Redis' TIME; 0 for a full or missing bucket); for a quota, its uses.

local now
local time = redis.call('TIME')
now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local stored = redis.call('MGET', unpack(KEYS))
local out = {}
for i = 1, #KEYS do
  local tat = tonumber(stored[i]) or 0
  if ARGV[i] == 'q' then
    tat = now + tat
  end
  local used = tat - now
  if used < 0 then
    used = 0
  end
  out[i] = used
end
return out
