#!/usr/bin/env bash
# HTTP benchmark: the login paths and forward authentication, side by side in one run with wrk.
#   bare       a bare actix-web endpoint with the same request shape (the `bare-login` binary)
#   throttled  Portcullis refusing a client that keeps naming an account its wrong passwords
#              locked (429 `locked_out`, no hashing), from its deny cache once the store has
#              refused it
#   throttled-uncached  the same with `store.deny_cache_entries = 0`: every refusal asks Redis
#   throttled-memory    the same on the embedded default, the in-memory store (no Redis)
#   verified   Portcullis checking a wrong password (401: admission, Argon2id, record)
#   challenged the verified path's traffic (a new username from a new /24 every request, as a
#              botnet on residential proxies) on a replica that challenges every attempt
#              (`policy.challenge.mode = always`, what the service does under attack): answered
#              401 challenge_required before hashing, counted against the address's limits
#   bare-auth  the bare endpoint's GET /v1/auth: 204 for any Authorization header
#   forward-auth  Portcullis's forward authentication (GET /v1/auth with a live session's
#              bearer) on the embedded default: the session cache answers, no store is asked;
#              its "vs bare" is against bare-auth
#   raw-argon2 Argon2id verifications alone on as many threads as the hashing pool
#              (`portcullis passwords throughput`), the ceiling of the verified path
# Portcullis runs as one release replica on a private Redis (the shared-store configuration)
# and SQLite, at the default configuration (the default `log_level`, info, writing to a file:
# refusals are summarised, not a line each) with default Argon2 parameters and challenges off:
# the verified path's failures would otherwise put the service under attack within seconds, and
# it would measure challenges (401 challenge_required) instead of password checks.
# Every path runs BENCH_ROUNDS times (default 3), the rounds one after another (each round runs
# every path once), and each row is the path's round of median requests/s: a shared machine's
# speed drifts within a run by more than the differences measured, and interleaved rounds share
# the drift. For each path the script reports requests/s, p50/p99 latency, the answers' statuses
# and Redis commands per request (INFO commandstats deltas on the private Redis), and writes
# every round's as JSON lines to target/bench/http.jsonl.
#
# With BENCH_BASELINE_BIN=path/to/an/older/portcullis, the two throttled paths and forward
# authentication run on that binary too, in the same run (`throttled-baseline`,
# `throttled-memory-baseline`, `forward-auth-baseline`): a change measured side by side with what
# it changed.
# Settings (env): BENCH_ROUNDS (default 3), BENCH_DURATION (wrk -d, default 10s),
# BENCH_CONNECTIONS (default 32), BENCH_THREADS (default 1, as the issues measured: one core for
# the client; with 2 the client's threads take CPU from the server in proportion to its speed).
# Installs wrk (Debian's package) if missing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${BENCH_ROUNDS:-3}
duration=${BENCH_DURATION:-10s}
connections=${BENCH_CONNECTIONS:-32}
threads=${BENCH_THREADS:-1}
out=$repo/target/bench
mkdir -p "$out"

if ! command -v wrk >/dev/null; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get install -y wrk >/dev/null || { $sudo apt-get update >/dev/null && $sudo apt-get install -y wrk >/dev/null; }
fi
(cd "$repo" && cargo build --release --quiet -p portcullis-server -p portcullis-drill)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "bench-http: $* never answered" >&2; return 1; }

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# One Portcullis with its own private Redis: `start NAME DENY_CACHE_ENTRIES CHALLENGE_MODE [BIN]`
# sets NAME_port and NAME_redis.
start() {
  local name=$1 cache=$2 challenges=$3 bin=${4:-$repo/target/release/portcullis} redis port
  redis=$(free_port)
  redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no --logfile "$work/$name-redis.log" &
  pids+=($!)
  wait_for redis-cli -p "$redis" ping
  port=$(free_port)
  PORTCULLIS__SERVER__PORT=$port \
  PORTCULLIS__SERVER__TRUSTED_PROXIES=127.0.0.1 \
  PORTCULLIS__DATABASE__URL="sqlite://$work/$name.db" \
  PORTCULLIS__STORE__REDIS__URL="redis://127.0.0.1:$redis" \
  PORTCULLIS__STORE__DENY_CACHE_ENTRIES=$cache \
  PORTCULLIS__SECRETS__HMAC_KEY=$(openssl rand -hex 32) \
  PORTCULLIS__POLICY__CHALLENGE__MODE=$challenges \
    "$bin" 2>"$work/$name.log" &
  pids+=($!)
  wait_for curl -fs "http://127.0.0.1:$port/healthz"
  printf -v "${name}_port" %s "$port"
  printf -v "${name}_redis" %s "$redis"
}
start portcullis 100000 off
# The same without the deny cache: every refusal asks Redis.
start uncached 0 off
# Challenging every attempt, as under attack.
start challenging 100000 always
# And the embedded default: the memory store, no Redis at all. `start_memory NAME [BIN]` sets
# NAME_port.
start_memory() {
  local name=$1 bin=${2:-$repo/target/release/portcullis} port
  port=$(free_port)
  PORTCULLIS__SERVER__PORT=$port \
  PORTCULLIS__SERVER__TRUSTED_PROXIES=127.0.0.1 \
  PORTCULLIS__DATABASE__URL="sqlite://$work/$name.db" \
  PORTCULLIS__POLICY__CHALLENGE__MODE=off \
    "$bin" 2>"$work/$name.log" &
  pids+=($!)
  wait_for curl -fs "http://127.0.0.1:$port/healthz"
  printf -v "${name}_port" %s "$port"
}
start_memory memory
paths=(bare throttled throttled-uncached throttled-memory verified challenged bare-auth forward-auth)
throttled_ports=("$portcullis_port" "$uncached_port" "$memory_port")
if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
  start baseline 100000 off "$BENCH_BASELINE_BIN"
  start_memory baseline_memory "$BENCH_BASELINE_BIN"
  paths=(bare throttled throttled-baseline throttled-memory throttled-memory-baseline throttled-uncached verified challenged bare-auth forward-auth forward-auth-baseline)
  throttled_ports+=("$baseline_port" "$baseline_memory_port")
fi

bare_port=$(free_port)
"$repo/target/release/bare-login" "127.0.0.1:$bare_port" &
pids+=($!)
wait_for curl -s -o /dev/null "http://127.0.0.1:$bare_port/v1/login"

# Forward authentication's session: an account of the embedded default's on PORT, logged in
# once; prints its token.
session_token() {
  local port=$1 password
  password=$(openssl rand -hex 16)
  curl -fs -o /dev/null -H 'content-type: application/json' \
    -d "{\"username\":\"bench-session\",\"password\":\"$password\"}" "http://127.0.0.1:$port/v1/users"
  curl -fs -H 'content-type: application/json' \
    -d "{\"username\":\"bench-session\",\"password\":\"$password\"}" "http://127.0.0.1:$port/v1/login" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
memory_token=$(session_token "$memory_port")
[ -z "${BENCH_BASELINE_BIN:-}" ] || baseline_memory_token=$(session_token "$baseline_memory_port")

# The throttled paths' client locks its account (its fifth wrong password) before the
# measurement starts.
for port in "${throttled_ports[@]}"; do
  for _ in $(seq 40); do
    curl -s -o /dev/null -H 'content-type: application/json' -H 'x-forwarded-for: 203.0.113.7' \
      -d '{"username":"bench-user","password":"not-the-password"}' "http://127.0.0.1:$port/v1/login"
  done
done

: >"$out/http.jsonl"
for path in $(for _ in $(seq "$rounds"); do echo "${paths[@]}"; done); do
  endpoint=/v1/login token=
  case $path in
    bare-auth) port=$bare_port redis_port=$uncached_redis endpoint=/v1/auth ;;
    # The embedded default: no attempt store is asked; the session cache answers.
    forward-auth) port=$memory_port redis_port=$uncached_redis endpoint=/v1/auth token=$memory_token ;;
    forward-auth-baseline)
      port=$baseline_memory_port redis_port=$uncached_redis endpoint=/v1/auth token=$baseline_memory_token ;;
    throttled-baseline) port=$baseline_port redis_port=$baseline_redis ;;
    throttled-memory-baseline) port=$baseline_memory_port redis_port=$uncached_redis ;;
    bare) port=$bare_port redis_port=$portcullis_redis ;;
    throttled-uncached) port=$uncached_port redis_port=$uncached_redis ;;
    challenged) port=$challenging_port redis_port=$challenging_redis ;;
    # (No Redis behind it: the row's Redis columns read an idle one.)
    throttled-memory) port=$memory_port redis_port=$uncached_redis ;;
    *) port=$portcullis_port redis_port=$portcullis_redis ;;
  esac
  redis-cli -p "$redis_port" config resetstat >/dev/null
  result=$(BENCH_PATH=$path BENCH_TOKEN=$token wrk -t"$threads" -c"$connections" -d"$duration" \
    -s "$repo/scripts/bench/login.lua" "http://127.0.0.1:$port$endpoint" | tail -n 1)
  stats=$(redis-cli -p "$redis_port" info commandstats | tr -d '\r')
  commands=$(echo "$stats" |
    sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\),.*/\1 \2/p' | { grep -vE '^(info|config)' || true; } | sort)
  # Redis CPU time per counter function call (its own commands included).
  script_usec=$(echo "$stats" | sed -n 's/^cmdstat_fcall:.*,usec_per_call=\([0-9.]*\).*/\1/p')
  python3 - "$result" "$commands" "${script_usec:-}" >>"$out/http.jsonl" <<'PY'
import json, sys
result = json.loads(sys.argv[1])
calls = {name: int(n) for name, n in (line.split() for line in sys.argv[2].splitlines() if line)}
per_request = {name: round(n / max(result["requests"], 1), 2) for name, n in calls.items()}
result["redis_commands_per_request"] = per_request
result["redis_usec_per_script"] = float(sys.argv[3]) if sys.argv[3] else None
print(json.dumps(result))
PY
done

# The verified path's ceiling: Argon2id alone with the replica's parameters and thread count.
PORTCULLIS__DATABASE__URL="sqlite://$work/portcullis.db" \
  "$repo/target/release/portcullis" passwords throughput --seconds "${duration%s}" >>"$out/http.jsonl"

python3 - "$out/http.jsonl" <<'PY'
import json, sys
# Each path's round of median requests/s, in the order the paths first ran.
rounds = {}
for line in open(sys.argv[1]):
    row = json.loads(line)
    rounds.setdefault(row["path"], []).append(row)
speed = lambda r: r.get("requests_per_sec", r.get("verifications_per_sec"))
rows = [sorted(runs, key=speed)[(len(runs) - 1) // 2] for runs in rounds.values()]
by_path = {r["path"]: r for r in rows}
bare = by_path["bare"]["requests_per_sec"]
# Forward authentication is measured against the bare endpoint's GET /v1/auth.
bare_auth = by_path["bare-auth"]["requests_per_sec"]
raw = by_path["raw-argon2"]["verifications_per_sec"]
print("| path | requests/s | p50 ms | p99 ms | answers | Redis commands per request (calls inside scripts included) | Redis µs per script | vs bare | vs raw Argon2 |")
print("|---|---:|---:|---:|---|---|---:|---:|---:|")
for r in rows:
    if r["path"] == "raw-argon2":
        print(f"| raw-argon2 ({r['workers']} threads) | {raw:.0f} | – | – | – | none | – | – | 1.000 |")
        continue
    answers = ", ".join(f"{n}×{s}" for s, n in sorted(r["statuses"].items()))
    commands = ", ".join(f"{v} {k}" for k, v in r["redis_commands_per_request"].items()) or "none"
    usec = r.get("redis_usec_per_script")
    usec = f"{usec:.1f}" if usec is not None else "–"
    vs_raw = f"{r['requests_per_sec'] / raw:.3f}" if r["path"] == "verified" else "–"
    base = bare_auth if "-auth" in r["path"] else bare
    print(f"| {r['path']} | {r['requests_per_sec']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {answers} | {commands} | {usec} | {r['requests_per_sec'] / base:.3f} | {vs_raw} |")
PY
