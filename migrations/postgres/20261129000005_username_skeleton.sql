-- The UTS #39 confusable skeleton of the username: registering a look-alike of an existing
-- account (`аdmin` with a Cyrillic а next to `admin`) is refused like a taken name. Rows made
-- before this column are filled in at start-up; NULL never collides.
ALTER TABLE accounts ADD COLUMN skeleton TEXT;
CREATE UNIQUE INDEX accounts_skeleton ON accounts (skeleton);
