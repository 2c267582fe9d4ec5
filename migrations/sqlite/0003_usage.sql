-- Indexes for the analytics queries (core/src/db/usage.rs). The primary key
-- (minute, key_id, route) serves time ranges and top keys, usage_minute_key
-- (key_id, minute) the per-key queries, violations_at / violations_key_at the
-- violation pages; these two add the per-route filters.
CREATE INDEX usage_minute_route ON usage_minute (route, minute);
CREATE INDEX violations_route_at ON violations (route, at);
