-- Links in notices to the account's owner: "this wasn't me" after a new-device login (ends every
-- session, mails a reset link) and "unlock" after a lockout (lifts the account's lockout). Stored
-- by the SHA-256 of their token, used once.
CREATE TABLE owner_links (
    token_digest TEXT   PRIMARY KEY,
    account_id   TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    purpose      TEXT   NOT NULL,                -- not_me or unlock
    expires_at   BIGINT NOT NULL,                -- milliseconds since the Unix epoch
    used_at      BIGINT NOT NULL DEFAULT 0       -- 0 until used
);
CREATE INDEX owner_links_by_account ON owner_links (account_id, expires_at);
-- Notices are counted per recipient and kind over the last hour (the per-account cap).
CREATE INDEX outbox_by_recipient ON outbox (recipient, kind, created_at);
