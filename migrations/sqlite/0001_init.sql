-- Tollgate schema, SQLite flavour. migrations/postgres/0001_init.sql holds the
-- same tables with the same columns and meaning (a test compares them).
--
-- Conventions shared by both databases:
--   * timestamps are BIGINT Unix milliseconds;
--   * booleans are integers 0/1 (so sqlx `Any` decodes them the same way);
--   * JSON is stored as TEXT.

CREATE TABLE admins (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);

-- Only the SHA-256 of a key is stored (lower-case hex). While a rotation grace
-- period runs, the previous secret's hash is kept with the instant it expires.
-- `updated_at` strictly increases on every change (see core/src/db/keys.rs),
-- which is what the proxy's change detection relies on.
CREATE TABLE api_keys (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT    NOT NULL,
    owner            TEXT,
    metadata         TEXT    NOT NULL DEFAULT '{}',
    plan             TEXT,
    limits           TEXT,
    concurrency      BIGINT,
    enabled          INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    expires_at       BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    last_used_at     BIGINT,
    key_prefix       TEXT    NOT NULL,
    key_hash         TEXT    NOT NULL UNIQUE,
    prev_key_hash    TEXT,
    prev_valid_until BIGINT
);
CREATE INDEX api_keys_name ON api_keys (name);
CREATE INDEX api_keys_plan ON api_keys (plan);
CREATE INDEX api_keys_updated_at ON api_keys (updated_at);

-- Plans created through the API (plans in the YAML config are not stored).
CREATE TABLE plans (
    name        TEXT   PRIMARY KEY,
    limits      TEXT   NOT NULL,
    concurrency BIGINT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Per minute x key x route counters. `minute` is the Unix ms at the start of
-- the minute; `key_id` 0 means "no key" (unauthenticated routes, 401s).
-- lat_b0..lat_b11 count requests per latency bucket (bounds in
-- core/src/db/mod.rs, LATENCY_BUCKET_BOUNDS_US); latency_sum_us sums them.
CREATE TABLE usage_minute (
    minute          BIGINT NOT NULL,
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
    PRIMARY KEY (minute, key_id, route)
);
CREATE INDEX usage_minute_key ON usage_minute (key_id, minute);

-- Recent refused requests. `key_id` is NULL when no (known) key was presented;
-- `limit_name` names the violated limit(s) of a 429, NULL for 401/403.
CREATE TABLE violations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         BIGINT  NOT NULL,
    key_id     BIGINT,
    route      TEXT    NOT NULL,
    method     TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    client_ip  TEXT    NOT NULL,
    limit_name TEXT,
    status     BIGINT  NOT NULL
);
CREATE INDEX violations_at ON violations (at);
CREATE INDEX violations_key_at ON violations (key_id, at);

-- One row per running proxy, refreshed by its heartbeat.
CREATE TABLE instances (
    id              TEXT   PRIMARY KEY,
    address         TEXT   NOT NULL,
    version         TEXT   NOT NULL,
    started_at      BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    stats           TEXT   NOT NULL DEFAULT '{}',
    upstream_health TEXT   NOT NULL DEFAULT '[]'
);
CREATE INDEX instances_last_seen ON instances (last_seen);
