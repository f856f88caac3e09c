-- A permanent lockout is account state: it must outlive a Redis that keeps nothing on disk.
-- Set when the lockout policy turns permanent; cleared only by an administrator's unlock.
-- 0 means unlocked.
ALTER TABLE accounts ADD COLUMN locked_at BIGINT NOT NULL DEFAULT 0;
