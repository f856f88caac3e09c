#!/bin/sh
# First start: a cluster in $PGDATA with the role, password and database the environment names
# (as the public postgres image does), listening on every address. Then PostgreSQL itself.
set -eu
user=${POSTGRES_USER:-postgres}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -A "$auth" >/dev/null
    rm -f "$pwfile"
  else
    auth=${POSTGRES_HOST_AUTH_METHOD:?set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust}
    initdb -D "$PGDATA" -U "$user" -A "$auth" >/dev/null
  fi
  echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  db=${POSTGRES_DB:-$user}
  if [ "$db" != postgres ]; then
    echo "CREATE DATABASE \"$db\"" | postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
fi
if [ "${1:-}" = postgres ]; then shift; exec postgres -D "$PGDATA" "$@"; fi
exec "$@"
