-- Issue 20: the admin "reset / adjust quota" action. Every reset or
-- adjustment of one quota's current period is one row, never changed: the
-- proxies read the rows whose period has not ended with the key refresh and
-- apply each exactly once (Redis: an idempotent script keyed by the row's
-- id; local: in memory, each process its own count). subject_kind is 'key'
-- (api_keys.id) or 'identity' (identities.id); quota is the limit's name;
-- period_start / period_end (µs since the epoch) name the period it applies
-- to; kind is 'reset' or 'delta' (used_delta uses added, negative: given
-- back).
CREATE TABLE quota_adjustments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_kind TEXT   NOT NULL,
    subject_id   BIGINT NOT NULL,
    quota        TEXT   NOT NULL,
    period_start BIGINT NOT NULL,
    period_end   BIGINT NOT NULL,
    kind         TEXT   NOT NULL,
    used_delta   BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    actor        TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX quota_adjustments_period_end ON quota_adjustments (period_end);
CREATE INDEX quota_adjustments_subject ON quota_adjustments (subject_kind, subject_id);
