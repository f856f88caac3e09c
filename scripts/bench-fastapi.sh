#!/usr/bin/env bash
# The seed's case, measured (examples/fastapi): prints two Markdown tables.
#
# 1. Before and after, under the same credential stuffing. For `botnet` and `low-and-slow`
#    (drill/scenarios): the seed's app (examples/fastapi/seed_app.py: SHA-256, no limit) holding
#    the scenario's accounts (`portcullis-drill accounts`), attacked with `portcullis-drill run
#    --plain-app`; then the same scenario against Portcullis, which the fixed app's login is
#    (deploy/nginx/forward-auth.conf sends /v1/login there): a fresh local stack
#    (scripts/local-stack.sh: 3 replicas behind nginx, Redis, PostgreSQL), the default policy.
# 2. Requests/s on a protected route, next to the same route unprotected (wrk, 1 thread, 32
#    connections, BENCH_DURATION each, default 10s), one uvicorn worker of examples/fastapi/app.py:
#    `jwt` (GET /api/items, the access token checked in the app) against `bare` (GET /public,
#    the same answer unprotected), both straight to uvicorn; `forward-auth` (GET /items through
#    nginx, which asks Portcullis's GET /v1/auth for the session) against `bare-through-nginx`
#    (GET /public through the same nginx, not asked). Portcullis is one release replica on its
#    embedded defaults (memory store, SQLite), access tokens on.
# Needs the interop venv (scripts/test.sh installs it, with the example's requirements) and
# nginx. Takes about 10 minutes on 2 cores.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python=${PORTCULLIS_TEST_PYTHON:-$repo/target/interop-venv/bin/python}
out=target/bench/fastapi
duration=${BENCH_DURATION:-10s}
mkdir -p "$out"
cargo build --release --quiet -p portcullis-server -p portcullis-drill
drill=target/release/portcullis-drill

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "bench-fastapi: $* never answered" >&2; return 1; }
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
uvicorn() { # MODULE PORT [ENV...]: one uvicorn worker of an app of the example
  local module=$1 port=$2
  shift 2
  env "$@" "$python" -m uvicorn "$module" --app-dir examples/fastapi --host 127.0.0.1 \
    --port "$port" --no-proxy-headers --log-level warning &
  pids+=($!)
  wait_for curl -s -o /dev/null "http://127.0.0.1:$port/"
}

# 1. Before and after.
for scenario in botnet low-and-slow; do
  "$drill" accounts "drill/scenarios/$scenario.toml" >"$work/$scenario.csv"
  port=$(free_port)
  uvicorn seed_app:app "$port" SEED_USERS="$work/$scenario.csv"
  "$drill" run "drill/scenarios/$scenario.toml" --url "http://127.0.0.1:$port" --plain-app \
    --out "$out/seed-app" >"$out/seed-app-$scenario.txt"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
  "$drill" run "drill/scenarios/$scenario.toml" --out "$out/portcullis" >"$out/portcullis-$scenario.txt"
done

# 2. Requests/s.
portcullis=$(free_port)
PORTCULLIS__SERVER__PORT=$portcullis \
PORTCULLIS__DATABASE__URL="sqlite://$work/portcullis.db?mode=rwc" \
PORTCULLIS__TOKENS__ACCESS__ENABLED=true \
PORTCULLIS__SECRETS__SIGNING_KEY="$(openssl genpkey -algorithm ed25519)" \
  target/release/portcullis 2>"$work/portcullis.log" &
pids+=($!)
wait_for curl -fs "http://127.0.0.1:$portcullis/healthz"
password=$(openssl rand -hex 16)
curl -fs -o /dev/null -H 'content-type: application/json' \
  -d "{\"username\":\"bench-fastapi\",\"password\":\"$password\"}" "http://127.0.0.1:$portcullis/v1/users"
login=$(curl -fs -H 'content-type: application/json' \
  -d "{\"username\":\"bench-fastapi\",\"password\":\"$password\"}" "http://127.0.0.1:$portcullis/v1/login")
session=$(echo "$login" | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
jwt=$(echo "$login" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
app=$(free_port)
uvicorn app:app "$app" PORTCULLIS_URL="http://127.0.0.1:$portcullis"
front=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    upstream portcullis { server 127.0.0.1:$portcullis; keepalive 32; }
    upstream app { server 127.0.0.1:$app; keepalive 32; }
    server {
        listen 127.0.0.1:$front;
        include $repo/deploy/nginx/forward-auth.conf;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Portcullis-Subject \$portcullis_subject;
            proxy_set_header X-Portcullis-Username \$portcullis_username;
        }
        location = /public {
            auth_request off;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off; master_process off;' &
pids+=($!)
wait_for curl -s -o /dev/null "http://127.0.0.1:$front/public"
rps() { # NAME URL [HEADER]: one wrk run, as a JSON line
  local name=$1 url=$2 header=${3:-X-Bench: 1} result
  result=$(wrk -t1 -c32 -d"$duration" -H "$header" --latency "$url")
  python3 - "$name" "$result" <<'PY'
import json, re, sys
name, text = sys.argv[1], sys.argv[2]
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({
    "path": name,
    "requests_per_sec": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
    "p99": re.search(r"99%\s+(\S+)", text).group(1),
    "non_2xx": int(non2xx.group(1)) if non2xx else 0,
}))
PY
}
{
  rps bare "http://127.0.0.1:$app/public"
  rps jwt "http://127.0.0.1:$app/api/items" "Authorization: Bearer $jwt"
  rps bare-through-nginx "http://127.0.0.1:$front/public"
  rps forward-auth "http://127.0.0.1:$front/items" "Authorization: Bearer $session"
} >"$out/rps.jsonl"

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| scenario | app | pairs | verified | compromised / hits in list | legit success | attacker req/s |")
print("|---|---|---:|---:|---:|---:|---:|")
for scenario in ("botnet", "low-and-slow"):
    for label, where in (("the seed's app", "seed-app"), ("behind Portcullis", "portcullis")):
        run = json.load(open(os.path.join(out, where, f"{scenario}.json")))["runs"][0]
        a, l = run["attacker"], run["legit"]
        verified = a["failed"] + a["succeeded"] + a["second_factor"] + a["reset_required"]
        print(f"| {scenario} | {label} | {a['pairs']} | {verified} | {a['compromised_accounts']} / {a['hits_in_list']} | "
              f"{l['success_rate'] * 100:.1f}% of {l['logins']} | {run['attacker_requests_per_sec']:.0f} |")
print()
rows = {r["path"]: r for r in map(json.loads, open(os.path.join(out, "rps.jsonl")))}
base = {"bare": "bare", "jwt": "bare", "bare-through-nginx": "bare-through-nginx", "forward-auth": "bare-through-nginx"}
print("| route | requests/s | p99 | non-2xx | vs its bare route |")
print("|---|---:|---:|---:|---:|")
for name, r in rows.items():
    ratio = r["requests_per_sec"] / rows[base[name]]["requests_per_sec"]
    print(f"| {name} | {r['requests_per_sec']:.0f} | {r['p99']} | {r['non_2xx']} | {ratio:.3f} |")
PY
