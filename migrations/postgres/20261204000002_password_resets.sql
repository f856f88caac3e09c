-- Password-reset links (OWASP's Forgot Password Cheat Sheet): stored by the SHA-256 of their
-- token, 30 minutes, used once. Rows stay until they expire, so an account's links of the last
-- hour can be counted (at most three reset mails an hour).
CREATE TABLE password_resets (
    token_digest TEXT   PRIMARY KEY,
    account_id   TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,                -- milliseconds since the Unix epoch
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT NOT NULL DEFAULT 0       -- 0 until used (or outdated by another use)
);
CREATE INDEX password_resets_by_account ON password_resets (account_id, created_at);
