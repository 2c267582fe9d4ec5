-- Round 5, N1 and round 6, F1: the name a local proxy writes its quota
-- counts under (quota_counts.instance: proxy.instance_name, else
-- '<host>@<listen>').
--
-- instances.counter: the name, written with each heartbeat (NULL: a
-- Redis-backend proxy, or one from before this column).
--
-- instance_names: who holds each name. A proxy claims its name before it
-- listens, atomically (INSERT … ON CONFLICT DO NOTHING: of two starting at
-- once exactly one gets it), refreshes beat_at (Unix ms) with each
-- heartbeat, and removes the row on a clean stop. A name whose holder's
-- beat_at stops moving (a crash) is taken over by compare-and-swap on
-- (instance, beat_at); a holder whose refresh finds the row taken reports
-- the conflict.
ALTER TABLE instances ADD COLUMN counter TEXT;
CREATE TABLE instance_names (
    name     TEXT   PRIMARY KEY,
    instance TEXT   NOT NULL,
    beat_at  BIGINT NOT NULL
);
