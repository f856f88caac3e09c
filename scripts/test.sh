#!/usr/bin/env bash
# The test command (README.md, and what .ci/run runs): installs what a fresh machine lacks,
# builds the local container images, checks that the use cases (portcullis-accounts) depend on
# no web framework, then runs `cargo test --workspace` and Schemathesis against a release
# binary (scripts/schemathesis.sh). Idempotent: what is there is kept.
#
# - Debian packages: redis-server and postgresql (the shared servers below, and the binaries
#   the fixtures fall back to without Docker); nginx-light (local-stack and drill smoke tests);
#   prometheus and promtool (metrics, alert rules, the local stack's Prometheus); chromium (the
#   browser suite); openssl (fixtures); debootstrap (scripts/images.sh); nftables (packet loss
#   inside a container, entered with nsenter, for the compose fault tests: the kernel here has
#   no netem).
# - Independent implementations for the interop tests, pinned, in target/interop-venv: PyPI
#   `altcha` (challenges), `pyotp` (TOTP), `pyjwt` with `cryptography` (access tokens),
#   `kubernetes-validate` with PyYAML (the Kubernetes manifests against the API schemas),
#   `openapi-spec-validator` (the OpenAPI document), `schemathesis` (fuzzing the API),
#   `playwright` (driving Debian's chromium in the browser suite; its wheel carries its driver)
#   and `aiosmtpd` (a real SMTP server the mail tests run as a process); and
#   examples/fastapi/requirements.txt (FastAPI, uvicorn, httpx: the example's apps, run by the
#   api suite).
# - The local images (scripts/images.sh: no registry here). The integration suites run with no
#   PORTCULLIS_TEST_REDIS_URL / PORTCULLIS_TEST_DATABASE_URL, so every Redis, Redis Cluster and
#   PostgreSQL they use is a container a test started and removed; each start is logged to
#   target/test-containers.log and counted by image at the end, and a container left behind
#   fails the run. The compose test brings the whole stack up from the same images.
# - Shared Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (roles postgres and root,
#   trusted on loopback), started if they are down. No suite here uses them: every test has
#   servers of its own, so none needs a shared one. They serve the benches
#   (scripts/benchmarks.sh), a developer's PORTCULLIS_TEST_*_URL, and looking at things by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

INTEROP=(altcha==2.3.0 pyotp==2.9.0 PyJWT==2.15.1 cryptography==50.0.2 kubernetes-validate==1.37.0
  PyYAML==6.0.4 openapi-spec-validator==0.9.0 schemathesis==4.32.5 playwright==1.65.2
  aiosmtpd==1.4.6)
# And the FastAPI example's own pins (its tests run in the api suite), each package once.
mapfile -t INTEROP < <({ printf '%s\n' "${INTEROP[@]}"; grep -v '^#' examples/fastapi/requirements.txt; } | sort -u)
VENV=target/interop-venv
CONTAINER_LOG=$PWD/target/test-containers.log
COMPOSE_PROJECT=portcullis-compose-test

log() { printf '\n== %s\n' "$*"; }

ensure_packages() {
  local missing=()
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null ||
    missing+=(postgresql)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v nft >/dev/null || missing+=(nftables) # packet loss inside a container (compose tests)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    # A policy-rc.d of ours, unless the machine has one: the packages' own service starts are
    # not wanted (the script starts what it needs, where it needs it).
    local policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$policy" ] || rm -f "$policy"
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

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  log "starting redis on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis did not start" >&2; exit 1
}

ensure_postgres() {
  local version
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    log "starting postgresql $version on 127.0.0.1:5432"
    [ -d "/etc/postgresql/$version/main" ] || pg_createcluster "$version" main >/dev/null
    # Loopback connections are trusted, so PORTCULLIS_TEST_DATABASE_URL can name this server
    # as postgres://postgres@127.0.0.1:5432/postgres: a test machine's cluster (the one apt
    # made, which this script starts), never a production one.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    grep -q '^host all all 127.0.0.1/32 trust' "$hba" ||
      sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 100); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.1; done
    pg_isready -h 127.0.0.1 -p 5432 -q || { echo "postgresql did not start" >&2; exit 1; }
  fi
  local as_postgres=(runuser -u postgres -- psql -X -q -h /var/run/postgresql)
  "${as_postgres[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'root'" | grep -q 1 ||
    "${as_postgres[@]}" -c 'CREATE ROLE root SUPERUSER LOGIN'
}

# What the suites started and whether they removed it.
report_containers() {
  log "containers the suites started (image, id), then their count by image"
  if [ -s "$CONTAINER_LOG" ]; then
    cat "$CONTAINER_LOG"
    awk '{ print $2 }' "$CONTAINER_LOG" | sort | uniq -c
  else
    echo "none"
  fi
  local left
  left=$(docker ps -aq --filter label=portcullis.testkit)
  if [ -n "$left" ]; then
    echo "containers left behind by the suites (removing them):" >&2
    docker ps -a --filter label=portcullis.testkit --format '{{.ID}} {{.Image}} {{.Status}}' >&2
    docker rm -f -v $left >/dev/null
    return 1
  fi
}

# What the compose tests saw (crates/server/tests/api/compose.rs writes it).
report_compose() {
  local dir=target/compose-test
  [ -d "$dir" ] || return 0
  log "the compose stack: up, the drill through nginx, the checks"
  cat "$dir/drill/up.log" "$dir/drill/drill.txt" "$dir/drill/checks.txt" 2>/dev/null || true
  log "the compose stack: the replicas restarted one at a time under the drill"
  cat "$dir/rolling/drill.txt" 2>/dev/null || true
  log "the compose stack: a replica cut off from Redis under the drill"
  cat "$dir/partition/drill.txt" 2>/dev/null || true
  log "the compose stack with Sentinel: the Redis primary killed under the drill"
  cat "$dir/failover/drill.txt" target/fault-figures/sentinel-failover.txt 2>/dev/null || true
  log "the compose stack: every replica's Redis link 50 ms slower under the drill"
  cat "$dir/latency/drill.txt" 2>/dev/null || true
  log "the compose stack: 5% packet loss to Redis under the drill"
  cat "$dir/loss/drill.txt" 2>/dev/null || true
  log "the compose stack: PostgreSQL stopped and started under the drill"
  cat "$dir/postgres/drill.txt" 2>/dev/null || true
}

ensure_packages
ensure_interop_venv
ensure_redis
ensure_postgres

log "local container images (scripts/images.sh)"
bash scripts/images.sh

# Every Redis and PostgreSQL of the suites is a container of their own (see above).
unset PORTCULLIS_TEST_REDIS_URL PORTCULLIS_TEST_DATABASE_URL
export PORTCULLIS_TEST_PYTHON=${PORTCULLIS_TEST_PYTHON:-$PWD/$VENV/bin/python}
export PORTCULLIS_TEST_CONTAINER_LOG=$CONTAINER_LOG
export PORTCULLIS_TEST_COMPOSE_PROJECT=$COMPOSE_PROJECT
: >"$CONTAINER_LOG"
rm -rf target/compose-test
# Should the compose test be killed before its own clean-up, its stack still goes.
# (down reads docker-compose.yml, whose secrets must be set, to any value.)
trap 'POSTGRES_PASSWORD=- PORTCULLIS_HMAC_KEY=- PORTCULLIS_ADMIN_TOKEN=- \
  docker-compose -p "$COMPOSE_PROJECT" down -v --remove-orphans >/dev/null 2>&1 || true' EXIT

log "the use cases stand on no web framework (cargo tree -p portcullis-accounts)"
if cargo tree -p portcullis-accounts -e normal,build --prefix none | grep -E '^(actix|askama|utoipa)'; then
  echo "portcullis-accounts depends on a web framework (above): it must not" >&2
  exit 1
fi

log "cargo test --workspace"
status=0
cargo test --workspace "$@" || status=$?
report_compose
report_containers || status=1
[ "$status" = 0 ] || exit "$status"

log "schemathesis against a release binary"
bash scripts/schemathesis.sh
