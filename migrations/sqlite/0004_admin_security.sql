-- Admin security (issue 17), SQLite flavour; migrations/postgres has the same.
--
-- Roles: `owner` (admins, settings), `admin` (keys, plans), `viewer`
-- (read-only). Admins that existed before roles could do everything, so they
-- become owners; new admins always get an explicit role.
ALTER TABLE admins ADD COLUMN role TEXT NOT NULL DEFAULT 'owner'
    CHECK (role IN ('owner', 'admin', 'viewer'));
-- Bumped on a password change (and role change): every token carries the
-- generation it was issued under, older ones stop working.
ALTER TABLE admins ADD COLUMN session_gen BIGINT NOT NULL DEFAULT 0;
-- Usernames are unique regardless of case (usernames are ASCII).
CREATE UNIQUE INDEX admins_username_ci ON admins (lower(username));

-- Tokens revoked before they expire (logout). Rows past `expires_at` are
-- useless and pruned.
CREATE TABLE revoked_tokens (
    jti        TEXT   PRIMARY KEY,
    admin_id   BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);

-- Append-only record of who changed what. `actor_kind` is `admin` (actor =
-- username, actor_id = its id), `cli` (actor = the OS user) or `anonymous`
-- (a failed login). `changes` is JSON {field: {before, after}}; it never holds
-- a key, a hash or a password.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT  NOT NULL,
    actor_kind  TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    actor_id    BIGINT,
    client_ip   TEXT,
    action      TEXT    NOT NULL,
    target_type TEXT,
    target      TEXT,
    changes     TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_actor ON audit_events (actor, at);
CREATE INDEX audit_events_action ON audit_events (action, at);
CREATE INDEX audit_events_target ON audit_events (target_type, target, at);

-- Append-only: no row is ever changed, and none is deleted before it is a
-- day old (retention removes old rows only).
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_early_delete BEFORE DELETE ON audit_events
WHEN old.at > (CAST(strftime('%s', 'now') AS INTEGER) - 86400) * 1000
BEGIN
    SELECT RAISE(ABORT, 'audit_events younger than a day cannot be deleted');
END;
