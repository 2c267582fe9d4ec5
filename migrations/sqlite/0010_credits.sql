-- Issue 20: prepaid credits. Every top-up or adjustment of a subject's
-- balance is one row, never changed: the proxies apply each row exactly once
-- to the live balance (Redis: an idempotent script keyed by the row's id;
-- local: in memory), and spend from it in the same atomic step as the
-- buckets. subject_kind is 'key' (api_keys.id) or, with identities,
-- 'identity'. A subject holds credits once it has a row.
CREATE TABLE credit_adjustments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_kind TEXT   NOT NULL,
    subject_id   BIGINT NOT NULL,
    delta        BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    actor        TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX credit_adjustments_subject ON credit_adjustments (subject_kind, subject_id);
CREATE INDEX credit_adjustments_created_at ON credit_adjustments (created_at);
