-- Values a service generates once and keeps across restarts (e.g. the admin
-- API's JWT secret when no environment variable provides one).
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
