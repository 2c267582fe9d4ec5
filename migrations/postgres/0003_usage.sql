-- Indexes for the analytics queries (core/src/db/usage.rs). The primary key
-- (minute, key_id, route) serves time ranges and top keys, usage_minute_key
-- (key_id, minute) the per-key queries, violations_at / violations_key_at the
-- violation pages; these two add the per-route filters.
CREATE INDEX usage_minute_route ON usage_minute (route, minute);
CREATE INDEX violations_route_at ON violations (route, at);

-- usage_minute summed per hour (`hour` = Unix ms at the start of the hour),
-- written in the same transaction as the minute rows. Queries over long
-- ranges read whole hours here and only the partial hours at the ends from
-- usage_minute.
CREATE TABLE usage_hour (
    hour            BIGINT NOT NULL,
    key_id          BIGINT NOT NULL DEFAULT 0,
    route           TEXT   NOT NULL,
    allowed         BIGINT NOT NULL DEFAULT 0,
    limited         BIGINT NOT NULL DEFAULT 0,
    unauthorized    BIGINT NOT NULL DEFAULT 0,
    forbidden       BIGINT NOT NULL DEFAULT 0,
    upstream_errors BIGINT NOT NULL DEFAULT 0,
    latency_sum_us  BIGINT NOT NULL DEFAULT 0,
    lat_b0          BIGINT NOT NULL DEFAULT 0,
    lat_b1          BIGINT NOT NULL DEFAULT 0,
    lat_b2          BIGINT NOT NULL DEFAULT 0,
    lat_b3          BIGINT NOT NULL DEFAULT 0,
    lat_b4          BIGINT NOT NULL DEFAULT 0,
    lat_b5          BIGINT NOT NULL DEFAULT 0,
    lat_b6          BIGINT NOT NULL DEFAULT 0,
    lat_b7          BIGINT NOT NULL DEFAULT 0,
    lat_b8          BIGINT NOT NULL DEFAULT 0,
    lat_b9          BIGINT NOT NULL DEFAULT 0,
    lat_b10         BIGINT NOT NULL DEFAULT 0,
    lat_b11         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, key_id, route)
) WITH (fillfactor = 50);
-- Rows are updated in place by every flush: free space in each page lets
-- PostgreSQL make those updates HOT (no index churn, less bloat).
ALTER TABLE usage_minute SET (fillfactor = 70);
CREATE INDEX usage_hour_key ON usage_hour (key_id, hour);
CREATE INDEX usage_hour_route ON usage_hour (route, hour);

INSERT INTO usage_hour (hour, key_id, route, allowed, limited, unauthorized, forbidden, upstream_errors, latency_sum_us, lat_b0, lat_b1, lat_b2, lat_b3, lat_b4, lat_b5, lat_b6, lat_b7, lat_b8, lat_b9, lat_b10, lat_b11)
SELECT minute - (minute % 3600000), key_id, route,
       SUM(allowed),
       SUM(limited),
       SUM(unauthorized),
       SUM(forbidden),
       SUM(upstream_errors),
       SUM(latency_sum_us),
       SUM(lat_b0),
       SUM(lat_b1),
       SUM(lat_b2),
       SUM(lat_b3),
       SUM(lat_b4),
       SUM(lat_b5),
       SUM(lat_b6),
       SUM(lat_b7),
       SUM(lat_b8),
       SUM(lat_b9),
       SUM(lat_b10),
       SUM(lat_b11)
FROM usage_minute
GROUP BY minute - (minute % 3600000), key_id, route;
