-- Refusals without a valid key (401, 403, and 429s of the bad-key throttle or
-- of per-IP limits) are not stored one row per request, which would let an
-- unauthenticated caller fill the database: they are counted per (minute,
-- route, status, reason, client network). `reason` is the problem type of the
-- answer (`missing-api-key`, `invalid-api-key:unknown`, …), `client_net` the
-- client's /24 (IPv4) or /64 (IPv6) in CIDR notation ('' when unknown).
-- Refusals of valid keys over their limits stay in `violations`, one row each.
CREATE TABLE violation_aggregates (
    minute     BIGINT NOT NULL,
    route      TEXT   NOT NULL,
    status     BIGINT NOT NULL,
    reason     TEXT   NOT NULL,
    client_net TEXT   NOT NULL,
    count      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, route, status, reason, client_net)
);
CREATE INDEX violation_aggregates_route ON violation_aggregates (route, minute);

-- Usage flushes already applied, by batch id: a batch retried after a
-- timeout (that may have committed after all) is recognised and not counted
-- twice. Written in the same transaction as the batch; kept for a day.
CREATE TABLE usage_batches (
    id         TEXT   NOT NULL PRIMARY KEY,
    applied_at BIGINT NOT NULL
);
CREATE INDEX usage_batches_applied_at ON usage_batches (applied_at);
