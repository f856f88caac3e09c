-- A session opened with a password found in a breach: it must be changed.
ALTER TABLE sessions ADD COLUMN password_change_required BIGINT NOT NULL DEFAULT 0;

-- Short-lived single-use tokens between a verified password and what must follow it: the
-- second factor (`mfa`), or a forced password change (`password_change`). Stored like
-- sessions, by the SHA-256 of the token.
CREATE TABLE login_tokens (
    token_digest             TEXT   PRIMARY KEY,
    account_id               TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    purpose                  TEXT   NOT NULL,          -- 'mfa' or 'password_change'
    expires_at               BIGINT NOT NULL,          -- milliseconds since the Unix epoch
    codes_used               BIGINT NOT NULL DEFAULT 0, -- second-factor codes tried with it
    password_change_required BIGINT NOT NULL DEFAULT 0  -- the session it opens is flagged
);

-- One TOTP factor per account. The secret is sealed (ChaCha20-Poly1305 under a key derived
-- from secrets.hmac_key, bound to the account id); `key_id` names the key that sealed it.
-- `last_step` (the newest time step accepted) refuses replays with a compare-and-set; the
-- lockout columns are the account's second-factor lockout (policy.mfa), updated the same way.
CREATE TABLE totp_factors (
    account_id    TEXT   PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    sealed_secret TEXT   NOT NULL,
    key_id        TEXT   NOT NULL,
    confirmed_at  BIGINT NOT NULL DEFAULT 0,  -- 0 while enrolment awaits its first code
    last_step     BIGINT NOT NULL DEFAULT 0,
    failures      BIGINT NOT NULL DEFAULT 0,
    last_failure  BIGINT NOT NULL DEFAULT 0,
    locked_until  BIGINT NOT NULL DEFAULT 0,
    lockouts      BIGINT NOT NULL DEFAULT 0,
    in_flight     BIGINT NOT NULL DEFAULT 0,
    version       BIGINT NOT NULL DEFAULT 0
);

-- Single-use recovery codes, by their SHA-256 (they carry 80 random bits each). A used code
-- is kept, marked, so using it again is told apart from a wrong one.
CREATE TABLE recovery_codes (
    account_id  TEXT   NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    code_digest TEXT   NOT NULL,
    used_at     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, code_digest)
);

-- The instance's secret key when secrets.hmac_key is not configured (the embedded default):
-- made once, so sealed TOTP secrets and device cookies survive a restart.
CREATE TABLE instance_secret (
    id  BIGINT PRIMARY KEY,
    secret TEXT   NOT NULL
);
