#!/usr/bin/env bash
# Instructions one refused login costs, next to the bare endpoint's: counted by valgrind's
# callgrind, so the figure does not depend on what else the machine does; it moves by a few
# percent between runs, the replica's own timers ticking while it answers (bench-http's
# requests/s move between runs on a shared machine by more than a tenth of the replica's work).
# One replica on a private Redis, at the default configuration, one worker. A client sends 40
# wrong passwords for one account from one address (its fifth failure locks the account), then
# N and then 3N keep-alive requests, each refused 429 `locked_out` from the deny cache, as
# bench-http's throttled path is; the difference over 2N is the cost of one (start-up and the
# Argon2 dummy hash cancel out).
# Weigh binaries against each other with it, not the CPU's real profile: valgrind hides the
# CPU's SHA extensions, so SHA-256 (the username's keyed hash, about 8k of a refusal's
# instructions here) runs its software path, several times the cost `perf record` shows.
#   scripts/bench/refusal-instructions.sh [OLDER_PORTCULLIS_BINARY]
# With an older binary, it is counted in the same run. Env: REFUSALS (N, default 1000).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
n=${REFUSALS:-1000}
command -v valgrind >/dev/null || { echo "refusal-instructions: needs valgrind" >&2; exit 1; }
(cd "$repo" && cargo build --release --quiet -p portcullis-server -p portcullis-drill)

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sends COUNT logins on one connection to PORT; fails on an answer other than STATUS (a
# password check slipping into the count would pass Argon2 off as the refusal's cost), or,
# without STATUS, other than 401 or 429.
send() {
  python3 - "$1" "$2" "${3:-}" <<'PY'
import http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
allowed = {int(sys.argv[3])} if sys.argv[3] else {401, 429}
connection = http.client.HTTPConnection("127.0.0.1", port)
body = '{"username":"bench-user","password":"not-the-password"}'
headers = {"content-type": "application/json", "x-forwarded-for": "203.0.113.7"}
for _ in range(count):
    connection.request("POST", "/v1/login", body, headers)
    answer = connection.getresponse()
    answer.read()
    if answer.status not in allowed:
        sys.exit(f"answered {answer.status}, not {allowed}")
PY
}

# Instructions of one run of `BIN` (portcullis, or bare-login) answering COUNT requests.
instructions() {
  local kind=$1 bin=$2 count=$3 port out=$work/callgrind.out redis
  port=$(free_port)
  if [ "$kind" = bare ]; then
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "127.0.0.1:$port" 2>/dev/null &
  else
    redis=$(free_port)
    redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no --logfile /dev/null &
    pids+=($!)
    for _ in $(seq 50); do redis-cli -p "$redis" ping >/dev/null 2>&1 && break; sleep 0.1; done
    PORTCULLIS__SERVER__PORT=$port PORTCULLIS__SERVER__WORKERS=1 \
    PORTCULLIS__SERVER__TRUSTED_PROXIES=127.0.0.1 \
    PORTCULLIS__DATABASE__URL="sqlite://$work/$kind-$count.db" \
    PORTCULLIS__STORE__REDIS__URL="redis://127.0.0.1:$redis" \
    PORTCULLIS__SECRETS__HMAC_KEY=$(openssl rand -hex 32) \
      valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" 2>/dev/null &
  fi
  local server=$!
  pids+=("$server")
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$port/v1/login" && break; sleep 0.2; done
  # The account locked first: Portcullis answers 429 from then on; the bare endpoint, 401 always.
  local status=429
  [ "$kind" = bare ] && status=401
  send "$port" 40
  send "$port" "$count" "$status"
  kill -INT "$server"
  wait "$server" || true
  [ -z "${redis:-}" ] || redis-cli -p "$redis" shutdown nosave >/dev/null 2>&1 || true
  callgrind_annotate "$out" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}

per_refusal() {
  local low high
  low=$(instructions "$1" "$2" "$n")
  high=$(instructions "$1" "$2" $((3 * n)))
  echo $(((high - low) / (2 * n)))
}

bare=$(per_refusal bare "$repo/target/release/bare-login")
echo "bare endpoint: $bare instructions per request"
echo "portcullis, refused: $(per_refusal throttled "$repo/target/release/portcullis") instructions per request"
if [ -n "${1:-}" ]; then
  echo "$1, refused: $(per_refusal throttled "$1") instructions per request"
fi
