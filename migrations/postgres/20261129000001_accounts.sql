-- Accounts, one per normalised username (NFKC, case-folded, trimmed: see portcullis-core).
CREATE TABLE accounts (
    id            TEXT    PRIMARY KEY,     -- public, random: reveals no count or order
    username      TEXT    NOT NULL UNIQUE, -- normalised form; uniqueness is the database's job
    password_hash TEXT    NOT NULL,        -- Argon2id PHC string
    created_at    BIGINT  NOT NULL         -- milliseconds since the Unix epoch
);
