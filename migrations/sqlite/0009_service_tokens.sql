-- Issue 21: service tokens, the credentials of services that call the verify
-- API (`verify.listen`, `POST /v1/verify`). Like API keys, only the SHA-256
-- of a token is stored (lower-case hex); `token_prefix` (`tgs_` + 6) is what
-- listings show. The proxy reloads the set every `storage.key_refresh`.
CREATE TABLE service_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    token_prefix TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   BIGINT  NOT NULL,
    created_by   TEXT
);
