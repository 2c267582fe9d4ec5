-- Which identity each key belonged to, and since when (Unix ms; 0: since
-- the key was created), so that usage is billed to the identity a key had
-- when the usage happened, not to the one it has when the export runs
-- (black-box round 3, B3). Written by a trigger on api_keys: every way of
-- changing a key's identity (admin API, CLI, an identity's deletion) is
-- recorded, in the same transaction.
CREATE TABLE key_identities (
    seq         BIGSERIAL PRIMARY KEY,
    key_id      BIGINT NOT NULL,
    since       BIGINT NOT NULL,
    identity_id BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX key_identities_key ON key_identities (key_id, since);

INSERT INTO key_identities (key_id, since, identity_id)
SELECT id, 0, COALESCE(identity_id, 0) FROM api_keys;

CREATE FUNCTION tollgate_key_identity() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO key_identities (key_id, since, identity_id)
        VALUES (NEW.id, 0, COALESCE(NEW.identity_id, 0));
    ELSIF COALESCE(OLD.identity_id, 0) <> COALESCE(NEW.identity_id, 0) THEN
        INSERT INTO key_identities (key_id, since, identity_id)
        VALUES (NEW.id, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT,
                COALESCE(NEW.identity_id, 0));
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_keys_identity_history
AFTER INSERT OR UPDATE OF identity_id ON api_keys
FOR EACH ROW EXECUTE FUNCTION tollgate_key_identity();
