-- Issue 20: identities (a customer, a tenant) owning any number of keys.
--   external_id: the caller's own id for it (unique; validated in
--                core/src/rules/identities.rs: 1..=128 of [A-Za-z0-9._:@-]).
--   metadata:    a small JSON object (TEXT, at most 4 KiB serialised).
--   plan/limits: as on a key; a key's own limits win over the identity's,
--                which win over any plan (core/src/rules/effective.rs).
-- A key belongs to at most one identity; deleting an identity detaches its keys.
CREATE TABLE identities (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    external_id TEXT   NOT NULL UNIQUE,
    name        TEXT   NOT NULL,
    metadata    TEXT   NOT NULL DEFAULT '{}',
    plan        TEXT,
    limits      TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX identities_updated_at ON identities (updated_at);

ALTER TABLE api_keys ADD COLUMN identity_id BIGINT REFERENCES identities (id) ON DELETE SET NULL;
CREATE INDEX api_keys_identity ON api_keys (identity_id);
