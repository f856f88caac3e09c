#!/usr/bin/env bash
# Schemathesis (PyPI, pinned in scripts/test.sh) against a release binary: every operation of
# each listener's GET /openapi.json (the public one, then the operations listener's, which has
# the admin API and metrics) generated and fuzzed with every check. Any 5xx, an answer that
# breaks its schema, a status the document does not list, or a schema-valid request refused
# (outside the rules scripts/schemathesis.toml lists as ones JSON Schema cannot state) fails the
# run (exit status non-zero).
#
# The binary runs on the embedded defaults (memory store, SQLite in a temp dir) with the admin
# API on its own listener (admin.listen), access tokens on and cheap Argon2, so the run stays
# short. The fuzzer logs in to one
# registered account for the session endpoints, so what would stop those logins is out of its
# way: its address is allowlisted, the account's lockouts are out of reach (its wrong current
# passwords on POST /v1/password count like logins), and challenges are off (its thousands of
# failures put the service under attack). The defences are the test suite's and the drill's
# subject; this run is the API's conformance to its document.
#
# Settings (env): ST_MAX_EXAMPLES (default 100), ST_SEED (default 1).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PORTCULLIS_TEST_PYTHON:-$repo/target/interop-venv/bin/python}
st=$(dirname "$python")/st
bin=${PORTCULLIS_BIN:-$repo/target/release/portcullis}
[ -n "${PORTCULLIS_BIN:-}" ] || (cd "$repo" && cargo build --release --quiet -p portcullis-server)

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
ops=$(free_port)
export PORTCULLIS_ST_ADMIN_TOKEN=$(openssl rand -hex 32)
export PORTCULLIS_ST_USERNAME=schemathesis PORTCULLIS_ST_PASSWORD="quiet walrus under amber lanterns"
env $(env | grep -o '^PORTCULLIS__[A-Z_]*' | sed 's/^/-u /') \
  PORTCULLIS__SERVER__PORT="$port" \
  PORTCULLIS__DATABASE__URL="sqlite://$work/portcullis.db" \
  PORTCULLIS__ADMIN__TOKEN="$PORTCULLIS_ST_ADMIN_TOKEN" \
  PORTCULLIS__ADMIN__LISTEN="127.0.0.1:$ops" \
  PORTCULLIS__TOKENS__ACCESS__ENABLED=true \
  PORTCULLIS__SECRETS__SIGNING_KEY="$(openssl genpkey -algorithm ed25519)" \
  PORTCULLIS__ARGON2__MEMORY_KIB=256 PORTCULLIS__ARGON2__ITERATIONS=1 \
  PORTCULLIS__POLICY__USERNAME__LOCKOUT__MAX_FAILURES=1000000 \
  PORTCULLIS__POLICY__USERNAME_IP__LOCKOUT__MAX_FAILURES=1000000 \
  PORTCULLIS__POLICY__CHALLENGE__MODE=off \
  PORTCULLIS__LOG_LEVEL=error \
  "$bin" 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
curl -fs -o /dev/null -H 'content-type: application/json' \
  -d "{\"username\":\"$PORTCULLIS_ST_USERNAME\",\"password\":\"$PORTCULLIS_ST_PASSWORD\"}" \
  "http://127.0.0.1:$port/v1/users"
# Allowlisted: the fuzzer's refused guesses would otherwise throttle its own session and admin
# logins (429, which the document lists).
curl -fs -o /dev/null -X PUT -H "authorization: Bearer $PORTCULLIS_ST_ADMIN_TOKEN" \
  -H 'content-type: application/json' -d '{"network":"127.0.0.1"}' \
  "http://127.0.0.1:$ops/admin/v1/allowlist"

# One worker: with two, CPython 3.11.7's ast.parse (Hypothesis describing a filter lambda in a
# worker thread) raised "SystemError: AST constructor recursion depth mismatch" (CPython
# gh-106905, fixed in 3.11.8), which Schemathesis reports as an error. A run takes ~20 s either way.
for listener in "$port" "$ops"; do
  "$st" --config-file "$repo/scripts/schemathesis.toml" run "http://127.0.0.1:$listener/openapi.json" \
    --checks all --max-examples "${ST_MAX_EXAMPLES:-100}" --seed "${ST_SEED:-1}" --workers 1 \
    --no-color --output-truncate false \
    || { echo "schemathesis failed on :$listener; the server's log:" >&2; tail -n 50 "$work/server.log" >&2; exit 1; }
done
