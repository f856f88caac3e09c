#!/usr/bin/env bash
# The hostile review's figures (issue 10) measured against one `portcullis` binary, so a build can
# be compared with an older one side by side: scripts/hostile-review.sh BIN LABEL.
# Starts the binary on 127.0.0.1:18181 (admin listener :18182) and a private redis-server on
# :16391, each case on a fresh SQLite database; needs curl, redis-server and promtool.
set -u
BIN=$1; LABEL=$2; W=$(mktemp -d); PORT=18181; RPORT=16391
base_env() {
  env -i PATH=$PATH HOME=$HOME PORTCULLIS__SERVER__PORT=$PORT PORTCULLIS__LOG_LEVEL=warn \
    PORTCULLIS__DATABASE__URL="sqlite://$W/db-$RANDOM.db" "$@"
}
start() { (cd $W && base_env "$@" "$BIN" >$W/log 2>&1 &) ; for _ in $(seq 100); do curl -s -o /dev/null localhost:$PORT/healthz && return; sleep 0.1; done; echo "no start: $(tail -3 $W/log)"; }
stop() { pkill -f "^$BIN" ; sleep 0.5; }
login() { curl -s -o /dev/null -w '%{http_code}' -X POST localhost:$PORT/v1/login -H 'content-type: application/json' "$@"; }
reg() { curl -s -o /dev/null -w '%{http_code}' -X POST localhost:$PORT/v1/users -H 'content-type: application/json' -d "{\"username\":\"$1\",\"password\":\"correct horse battery staple\"}"; }
body='{"username":"x","password":"y"}'
echo "== $LABEL"

start
echo "cache-control on a token answer: $(reg carol >/dev/null; curl -s -D - -o /dev/null -X POST localhost:$PORT/v1/login -H 'content-type: application/json' -d '{"username":"carol","password":"correct horse battery staple"}' | grep -i '^cache-control' | tr -d '\r' || true)"
echo "look-alikes: admin $(reg admin), cyrillic a $(reg $'\xd0\xb0dmin'), zero-width $(reg $'admin\xe2\x80\x8b')"
echo "public /metrics: $(curl -s -o /dev/null -w '%{http_code}' localhost:$PORT/metrics)"
curl -s localhost:$PORT/metrics > $W/metrics
echo "promtool problems: $(promtool check metrics < $W/metrics 2>&1 | grep -c .)"
stop

start PORTCULLIS__ADMIN__LISTEN=127.0.0.1:18182 PORTCULLIS__ADMIN__TOKEN=admin-token-for-figures-0123456789abcdef
echo "with admin.listen: public /metrics $(curl -s -o /dev/null -w '%{http_code}' localhost:$PORT/metrics), public /admin/v1/lockouts $(curl -s -o /dev/null -w '%{http_code}' localhost:$PORT/admin/v1/lockouts -H 'authorization: Bearer admin-token-for-figures-0123456789abcdef'), admin listener /metrics $(curl -s -o /dev/null -w '%{http_code}' localhost:18182/metrics)"
w=$(for _ in $(seq 40); do curl -s -o /dev/null -w '%{http_code}\n' localhost:18182/admin/v1/lockouts -H 'authorization: Bearer wrong'; done | uniq -c | awk '{printf " %sx%s", $1, $2}')
echo "40 wrong admin tokens from one address:$w"
stop

start PORTCULLIS__SERVER__TRUSTED_PROXIES=127.0.0.1 PORTCULLIS__POLICY__IP__ATTEMPTS__BURST=2 PORTCULLIS__POLICY__IP__ATTEMPTS__INTERVAL_MS=3600000
s=""; for _ in 1 2 3; do s="$s $(login -H 'X-Forwarded-For: 203.0.113.5' -d "$body")"; done
s="$s | $(login -H $'X-Forwarded-For: \xff, 203.0.113.5' -d "$body") $(login -H $'X-Forwarded-For: 203.0.113.5, \xff' -d "$body")"
echo "xff: throttled address, then '\\xff, addr' and 'addr, \\xff':$s"
stop

# Locked account vs unknown name, full-cost Argon2: time to answer (median of 5).
LOCKED_DB="sqlite://$W/locked.db"
start PORTCULLIS__POLICY__USERNAME__LOCKOUT__PERMANENT_AFTER=0 PORTCULLIS__DATABASE__URL=$LOCKED_DB
reg locked >/dev/null
for i in 1 2 3 4 5; do login -d '{"username":"locked","password":"wrong"}' >/dev/null; done
t() { for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST localhost:$PORT/v1/login -H 'content-type: application/json' -d "{\"username\":\"$1\",\"password\":\"wrong\"}"; done | sort -k2 | sed -n 3p; }
stop
# Restart: the attempt store (memory) forgets, the database remembers the permanent lock.
start PORTCULLIS__POLICY__USERNAME__LOCKOUT__PERMANENT_AFTER=0 PORTCULLIS__DATABASE__URL=$LOCKED_DB
echo "permanently locked account (status, median s): $(t locked); unknown name: $(t nobody$RANDOM)"
stop

# Shed with 503 (one hashing thread, one queue slot), then the right password.
start PORTCULLIS__ARGON2__WORKERS=1 PORTCULLIS__ARGON2__QUEUE_DEPTH=1
reg erin >/dev/null
for i in 1 2 3 4 5; do login -d '{"username":"erin","password":"wrong"}' > $W/shed$i & done; wait
echo "5 concurrent wrong passwords: $(cat $W/shed* | tr '\n' ' ' | sed 's/\([0-9]\{3\}\)/\1 /g'); then the right one: $(login -d '{"username":"erin","password":"correct horse battery staple"}')"
stop

# Sessions and Redis: restart empty, then dead (local mode).
redis-server --port $RPORT --save '' --appendonly no --daemonize yes >/dev/null
sleep 0.3
R="PORTCULLIS__STORE__REDIS__URL=redis://127.0.0.1:$RPORT PORTCULLIS__SECRETS__HMAC_KEY=0123456789abcdef0123456789abcdef-figures"
start $R
reg dora >/dev/null
TOKEN=$(curl -s -X POST localhost:$PORT/v1/login -H 'content-type: application/json' -d '{"username":"dora","password":"correct horse battery staple"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1; sleep 0.3
redis-server --port $RPORT --save '' --appendonly no --daemonize yes >/dev/null; sleep 0.5
s=""; for _ in 1 2 3; do s="$s $(curl -s -o /dev/null -w '%{http_code}' localhost:$PORT/v1/session -H "authorization: Bearer $TOKEN")"; sleep 0.5; done
echo "session after Redis restarted empty (3 tries):$s"
redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1; sleep 0.3
s=""; for _ in 1 2 3; do s="$s $(login -d '{"username":"dora","password":"correct horse battery staple"}')"; done
echo "correct password with Redis dead (local mode):$s"
stop

# An all-digit admin token from the environment.
start PORTCULLIS__ADMIN__TOKEN=1234567890123456789012345678901234567890
echo "40-digit admin token: $(curl -s -o /dev/null -w '%{http_code}' localhost:$PORT/admin/v1/lockouts -H 'authorization: Bearer 1234567890123456789012345678901234567890' || echo none)"
stop
rm -rf $W
