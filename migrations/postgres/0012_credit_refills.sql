-- Issue 20: a key's or an identity's own credit refill (plans declare theirs
-- in the YAML config). At each period start the proxies set the subject's
-- balance to `amount`, once per period across proxies. One row per subject;
-- either `every` (fixed periods from the Unix epoch, e.g. '1d') or `period`
-- with optional `anchor` and `time_zone` (calendar periods like a quota's).
-- Checked by core::refill before it is written.
CREATE TABLE credit_refills (
    subject_kind TEXT   NOT NULL,
    subject_id   BIGINT NOT NULL,
    amount       BIGINT NOT NULL,
    every        TEXT,
    period       TEXT,
    anchor       TEXT,
    time_zone    TEXT,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (subject_kind, subject_id)
);
