-- Passkeys (WebAuthn credentials). `credential` is webauthn-rs's Passkey as JSON: the public
-- key and the signature counter, nothing secret. `credential_id` is unique across accounts: a
-- credential registered to one account cannot be added to another. `version` moves with every
-- update, so two replicas finishing sign-ins with one passkey at once cannot write an older
-- counter over a newer one.
CREATE TABLE passkeys (
    id            TEXT   PRIMARY KEY,             -- public, random
    account_id    TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    credential_id TEXT   NOT NULL UNIQUE,         -- base64url, as the authenticator gave it
    name          TEXT   NOT NULL,
    credential    TEXT   NOT NULL,
    version       BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,                -- milliseconds since the Unix epoch
    last_used_at  BIGINT NOT NULL DEFAULT 0       -- 0 until first used
);
CREATE INDEX passkeys_by_account ON passkeys (account_id);

-- WebAuthn ceremonies between their options and their answer: the server's half (the
-- challenge, the credentials allowed), stored by the SHA-256 of the random id the client
-- echoes, taken once, alive 5 minutes. Any replica can finish what another started.
CREATE TABLE passkey_ceremonies (
    ceremony_digest TEXT   PRIMARY KEY,
    account_id      TEXT   REFERENCES accounts (id) ON DELETE CASCADE, -- none when discoverable
    state           TEXT   NOT NULL,               -- what it is for and webauthn-rs's state, JSON
    expires_at      BIGINT NOT NULL                -- milliseconds since the Unix epoch
);
CREATE INDEX passkey_ceremonies_by_expiry ON passkey_ceremonies (expires_at);
