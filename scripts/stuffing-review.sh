#!/usr/bin/env bash
# Issue 11's live figures against one `portcullis` binary, so a build can be compared with an
# older one side by side: scripts/stuffing-review.sh BIN LABEL.
# Starts the binary on 127.0.0.1:18281 (memory store, fresh SQLite, trusting 127.0.0.1 as a
# proxy so X-Forwarded-For names the client); needs curl and python3.
set -u
BIN=$1; LABEL=$2; W=$(mktemp -d); PORT=18281
start() {
  (cd "$W" && env -i PATH="$PATH" HOME="$HOME" PORTCULLIS__SERVER__PORT=$PORT PORTCULLIS__LOG_LEVEL=warn \
    PORTCULLIS__SERVER__TRUSTED_PROXIES=127.0.0.1 PORTCULLIS__DEVICE__SECURE_COOKIE=false \
    PORTCULLIS__DATABASE__URL="sqlite://$W/db-$RANDOM.db" "$@" "$BIN" >"$W/log" 2>&1 &)
  for _ in $(seq 100); do curl -s -o /dev/null localhost:$PORT/healthz && return; sleep 0.1; done
  echo "no start: $(tail -3 "$W/log")"
}
stop() { pkill -f "^$BIN" ; sleep 0.5; }
# login FROM USER PASSWORD [CURL ARGS...]: prints the status and the problem code, if any.
login() {
  local from=$1 user=$2 password=$3; shift 3
  curl -s -w ' %{http_code}' -X POST localhost:$PORT/v1/login -H 'content-type: application/json' \
    -H "x-forwarded-for: $from" -d "{\"username\":\"$user\",\"password\":\"$password\"}" "$@" \
    | python3 -c 'import json,sys; body, status = sys.stdin.read().rsplit(" ", 1); code = json.loads(body).get("code", "") if body.startswith("{") else ""; print(status, code or "ok")'
}
tally() { sort | uniq -c | awk '{printf " %s×%s %s", $1, $2, $3}'; }
echo "== $LABEL"

start
echo "400 usernames from 400 /64s of one /48:$(for i in $(seq 0 399); do login "2001:db8:42:$(printf %x "$i")::1" "user$i" Winter2026!; done | tally)"
stop

start
curl -s -o /dev/null -X POST localhost:$PORT/v1/users -H 'content-type: application/json' \
  -d '{"username":"alice","password":"correct horse battery staple"}'
cookie=$(curl -s -D - -o /dev/null -X POST localhost:$PORT/v1/login -H 'content-type: application/json' \
  -H 'x-forwarded-for: 198.51.100.7' -d '{"username":"alice","password":"correct horse battery staple"}' \
  | grep -i '^set-cookie' | sed 's/^[^:]*: //; s/;.*//' | tr -d '\r')
echo "an attacker behind alice's office NAT, 60 usernames:$(for i in $(seq 60); do login 198.51.100.7 "victim$i" Winter2026!; done | tally)"
echo "then alice from the office: without her device cookie $(login 198.51.100.7 alice 'correct horse battery staple'), with it $(login 198.51.100.7 alice 'correct horse battery staple' -H "cookie: $cookie")"
stop
rm -rf "$W"
