#!/usr/bin/env bash
# The test command (README.md, and what .ci/run runs): installs what a fresh machine lacks,
# makes sure the services the tests use are up, then runs `cargo test --workspace` and
# Schemathesis against a release binary (scripts/schemathesis.sh).
#
# - nginx (local-stack and drill smoke tests), prometheus and promtool (metrics, alert rules,
#   the local stack's Prometheus), redis-tools, postgresql-client and openssl (fixtures): Debian
#   packages.
# - The browser suite (crates/server/tests/browser): Debian's chromium, and npm
#   `playwright-core` pinned by its package-lock.json, installed there with `npm ci`.
# - Independent implementations for the interop tests, pinned, in target/interop-venv: PyPI
#   `altcha` (challenges), `pyotp` (TOTP), `pyjwt` with `cryptography` (access tokens),
#   `kubernetes-validate` with PyYAML (the Kubernetes manifests against the API schemas),
#   `openapi-spec-validator` (the OpenAPI document) and `schemathesis` (fuzzing the API).
# - Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432, started if they are down; the
#   tests take their own key prefix or database on them.
set -euo pipefail
cd "$(dirname "$0")/.."

INTEROP=(altcha==2.3.0 pyotp==2.9.0 PyJWT==2.15.1 cryptography==50.0.2 kubernetes-validate==1.37.0
  PyYAML==6.0.4 openapi-spec-validator==0.9.0 schemathesis==4.32.5)
VENV=target/interop-venv
BROWSER_SUITE=crates/server/tests/browser

log() { printf '\n== %s\n' "$*"; }

ensure_packages() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v npm >/dev/null || missing+=(nodejs npm)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

ensure_interop_venv() {
  local pinned
  pinned=$("$VENV/bin/pip" freeze 2>/dev/null | grep -cxF -f <(printf '%s\n' "${INTEROP[@]}") || true)
  if [ "$pinned" = "${#INTEROP[@]}" ]; then return; fi
  log "installing ${INTEROP[*]} into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${INTEROP[@]}"
}

ensure_browser_suite() {
  local wanted installed
  wanted=$(node -p "require('./$BROWSER_SUITE/package.json').dependencies['playwright-core']")
  installed=$(node -p "require('./$BROWSER_SUITE/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
  if [ "$installed" = "$wanted" ]; then return; fi
  log "installing playwright-core $wanted into $BROWSER_SUITE (npm ci)"
  npm ci --prefix "$BROWSER_SUITE" --no-audit --no-fund --loglevel=error
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  log "starting redis on 127.0.0.1:6379"
  if ! command -v redis-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server
  fi
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis did not start" >&2; exit 1
}

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then return; fi
  log "starting postgresql on 127.0.0.1:5432"
  if ! ls /etc/postgresql >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq postgresql
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  for _ in $(seq 100); do pg_isready -h 127.0.0.1 -p 5432 -q && return; sleep 0.1; done
  echo "postgresql did not start" >&2; exit 1
}

ensure_packages
ensure_interop_venv
ensure_browser_suite
ensure_redis
ensure_postgres

# Without these the fixtures would spawn private servers from the local binaries.
export PORTCULLIS_TEST_REDIS_URL=${PORTCULLIS_TEST_REDIS_URL:-redis://127.0.0.1:6379}
export PORTCULLIS_TEST_DATABASE_URL=${PORTCULLIS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export PORTCULLIS_TEST_PYTHON=${PORTCULLIS_TEST_PYTHON:-$PWD/$VENV/bin/python}

log "cargo test --workspace"
cargo test --workspace "$@"

log "schemathesis against a release binary"
bash scripts/schemathesis.sh
