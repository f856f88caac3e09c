-- Sessions live with the accounts: durable, so a Redis restart logs nobody out.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT, -- creation order, for evicting the oldest
    token_digest TEXT    NOT NULL UNIQUE,           -- SHA-256 of the bearer token, hex; never the token
    account_id   TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at   BIGINT  NOT NULL,                  -- milliseconds since the Unix epoch
    expires_at   BIGINT  NOT NULL
);
CREATE INDEX sessions_by_account ON sessions (account_id, id);
