-- Issue 21: signed webhooks (core/src/db/webhooks.rs, core/src/webhooks).
--
-- webhook_endpoints: where events go. `events` is a JSON array of event
-- types (["*"]: all). `secret` is the signing secret (`whsec_` + base64):
-- kept in clear, since every delivery is signed with it; shown once.
CREATE TABLE webhook_endpoints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    url         TEXT    NOT NULL,
    description TEXT,
    events      TEXT    NOT NULL DEFAULT '["*"]',
    secret      TEXT    NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

-- webhook_events: each event once. `dedup_key` is type:subject:period, so
-- that an event (a key's 80 % of one quota period, a key's expiry) is
-- enqueued exactly once however many processes notice it. `msg_id` is the
-- Standard Webhooks `webhook-id` every delivery of it carries.
CREATE TABLE webhook_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id      TEXT    NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    dedup_key   TEXT    NOT NULL UNIQUE,
    payload     TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX webhook_events_created ON webhook_events (created_at);

-- webhook_deliveries: the outbox, one row per event x endpoint. A worker
-- claims a due row by setting `locked_until` (a lease); `status` is
-- pending, succeeded or failed (attempts exhausted).
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        BIGINT  NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id     BIGINT  NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    status          TEXT    NOT NULL DEFAULT 'pending',
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    locked_until    BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    finished_at     BIGINT,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

-- webhook_attempts: the delivery log, one row per HTTP attempt.
CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id BIGINT  NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at          BIGINT  NOT NULL,
    status_code BIGINT,
    error       TEXT,
    duration_ms BIGINT  NOT NULL,
    succeeded   INTEGER NOT NULL CHECK (succeeded IN (0, 1))
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
