-- Networks exempt from the address and subnet limits (never from per-account limits).
-- Configuration, not counters: it lives with the accounts, where it survives restarts.
CREATE TABLE allowlist (
    network    TEXT   PRIMARY KEY,  -- CIDR, truncated to its prefix
    created_at BIGINT NOT NULL      -- milliseconds since the Unix epoch
);
