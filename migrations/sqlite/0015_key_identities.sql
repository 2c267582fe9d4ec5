-- Which identity each key belonged to, and since when (Unix ms; 0: since
-- the key was created), so that usage is billed to the identity a key had
-- when the usage happened, not to the one it has when the export runs
-- (black-box round 3, B3). Written by triggers on api_keys: every way of
-- changing a key's identity (admin API, CLI, an identity's deletion) is
-- recorded, in the same transaction.
CREATE TABLE key_identities (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id      INTEGER NOT NULL,
    since       INTEGER NOT NULL,
    identity_id INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX key_identities_key ON key_identities (key_id, since);

INSERT INTO key_identities (key_id, since, identity_id)
SELECT id, 0, COALESCE(identity_id, 0) FROM api_keys;

CREATE TRIGGER api_keys_identity_created AFTER INSERT ON api_keys
BEGIN
    INSERT INTO key_identities (key_id, since, identity_id)
    VALUES (new.id, 0, COALESCE(new.identity_id, 0));
END;

CREATE TRIGGER api_keys_identity_changed AFTER UPDATE OF identity_id ON api_keys
WHEN COALESCE(old.identity_id, 0) <> COALESCE(new.identity_id, 0)
BEGIN
    INSERT INTO key_identities (key_id, since, identity_id)
    VALUES (new.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
            COALESCE(new.identity_id, 0));
END;
