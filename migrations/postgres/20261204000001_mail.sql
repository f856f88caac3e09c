-- A channel to the account's owner: verified addresses, and the outbox that never loses mail.
-- The account's verified address, lower-cased; NULL: none. A verified address belongs to one
-- account.
ALTER TABLE accounts ADD COLUMN email TEXT;
CREATE UNIQUE INDEX accounts_by_email ON accounts (email);

-- Addresses waiting for their owner to follow the link: one live link per account.
CREATE TABLE email_verifications (
    token_digest TEXT   PRIMARY KEY,                  -- SHA-256 of the link's token, hex; never the token
    account_id   TEXT   NOT NULL UNIQUE REFERENCES accounts (id) ON DELETE CASCADE,
    email        TEXT   NOT NULL,
    expires_at   BIGINT NOT NULL                      -- milliseconds since the Unix epoch
);

-- Mail, written in the transaction of the change that causes it, sent by whichever replica
-- claims it first (FOR UPDATE SKIP LOCKED). `mail` holds what to say (its link included) until
-- sent, then is emptied.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    kind            TEXT    NOT NULL,                 -- what it is about, for operators
    recipient       TEXT    NOT NULL,
    mail            TEXT    NOT NULL,                 -- JSON: the message's kind and parameters
    state           TEXT    NOT NULL,                 -- queued, sent or failed
    attempts        BIGINT  NOT NULL,
    next_attempt_at BIGINT  NOT NULL,                 -- due from then (a claim pushes it by its lease)
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
