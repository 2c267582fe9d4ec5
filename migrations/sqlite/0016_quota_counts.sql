-- Issue 20: calendar quotas of the local limiter survive a restart. With
-- every usage flush a proxy on the local backend writes each quota count it
-- changed, whole, under its own name: instance is '<host>@<listen address>'
-- (stable across its restarts; each local proxy counts its own), holder
-- is whose count it is ('k42', 'i7'),
-- owner_key the key of an identity member's own quota (0 otherwise), bucket
-- the limit's bucket name ('p:monthly', 'r:llm:daily'), period_start /
-- period_end the period (µs since the epoch), used the uses counted, and
-- adjusted_through the last quota_adjustments row folded into it (a
-- restarted proxy applies only the later ones). A proxy reads its own rows
-- at start; rows of ended periods are dropped.
CREATE TABLE quota_counts (
    instance         TEXT   NOT NULL,
    holder           TEXT   NOT NULL,
    owner_key        BIGINT NOT NULL,
    bucket           TEXT   NOT NULL,
    period_start     BIGINT NOT NULL,
    period_end       BIGINT NOT NULL,
    used             BIGINT NOT NULL,
    adjusted_through BIGINT NOT NULL DEFAULT 0,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (instance, holder, owner_key, bucket, period_start)
);
CREATE INDEX quota_counts_period_end ON quota_counts (period_end);
CREATE INDEX quota_counts_holder ON quota_counts (holder, owner_key, bucket, period_start);
