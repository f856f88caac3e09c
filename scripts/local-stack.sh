#!/usr/bin/env bash
# The docker-compose topology from local processes, for machines without a Docker engine:
# Redis, PostgreSQL, a one-shot migration, three replicas and nginx (Debian's package) in front,
# using the same deploy/nginx/portcullis.conf as the compose stack; optionally Prometheus
# (Debian's package) scraping the replicas with the stack's alert rules.
#
#   scripts/local-stack.sh up      # prints the nginx URL
#   scripts/local-stack.sh down
#
# Settings (env): PORTCULLIS_STACK_DIR (state, default /tmp/portcullis-stack),
# PORTCULLIS_STACK_PORT (nginx, default 8090), PORTCULLIS_STACK_PROMETHEUS_PORT (when set,
# Prometheus listens there with deploy/prometheus/rules.yml), PORTCULLIS_BIN (default
# target/debug/portcullis, built if missing). Other PORTCULLIS__* variables reach the replicas unchanged; the replicas'
# whole PORTCULLIS__* environment is written to $PORTCULLIS_STACK_DIR/env.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
state=${PORTCULLIS_STACK_DIR:-/tmp/portcullis-stack}
nginx_port=${PORTCULLIS_STACK_PORT:-8090}
bin=${PORTCULLIS_BIN:-$repo/target/debug/portcullis}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # description, command...
  local what=$1; shift
  # A minute: a machine busy building and testing can be slow to start Prometheus.
  for _ in $(seq 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "local-stack: $what did not come up; the last lines of its logs:" >&2
  tail -n 20 "$state"/*.log >&2
  return 1
}

# Whether the Redis on $redis_port is the one started here: a daemonized redis-server returns
# before it binds, so another that took the port first would answer a PING. Ours writes its
# pidfile once it listens.
our_redis() {
  local pid
  pid=$(redis-cli -p "$redis_port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')
  [ -n "$pid" ] && [ "$pid" = "$(cat "$state/redis.pid" 2>/dev/null)" ]
}

# PostgreSQL refuses to run as root; run its binaries as `postgres` then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

up() {
  if [ -e "$state/up" ]; then echo "local-stack: already up in $state" >&2; exit 1; fi
  command -v nginx >/dev/null || { echo "local-stack: nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [ -x "$bin" ] || (cd "$repo" && cargo build -p portcullis-server)
  mkdir -p "$state"
  [ "$(id -u)" = 0 ] && chown postgres "$state"

  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --pidfile "$state/redis.pid" --logfile "$state/redis.log"
  wait_for redis our_redis

  pg_port=$(free_port)
  as_pg "$pg_bin/initdb" -A trust -U postgres -D "$state/pg" >"$state/initdb.log"
  as_pg "$pg_bin/pg_ctl" -D "$state/pg" -l "$state/pg/server.log" -w \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $state" start >/dev/null
  wait_for postgresql "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port"
  psql -h 127.0.0.1 -p "$pg_port" -U postgres -qc 'CREATE DATABASE portcullis' >/dev/null

  export PORTCULLIS__DATABASE__URL="postgres://postgres@127.0.0.1:$pg_port/portcullis"
  export PORTCULLIS__DATABASE__MIGRATE_ON_START=false
  export PORTCULLIS__STORE__REDIS__URL="redis://127.0.0.1:$redis_port"
  export PORTCULLIS__SECRETS__HMAC_KEY=${PORTCULLIS__SECRETS__HMAC_KEY:-$(openssl rand -hex 32)}
  # nginx reaches the replicas from 127.0.0.2 (proxy_bind), so clients on 127.0.0.1 are not
  # mistaken for the proxy: the replicas trust that address, plus any proxies in front of nginx
  # given in PORTCULLIS__SERVER__TRUSTED_PROXIES (the attack drill's 127.0.0.3).
  export PORTCULLIS__SERVER__TRUSTED_PROXIES=${PORTCULLIS__SERVER__TRUSTED_PROXIES:+$PORTCULLIS__SERVER__TRUSTED_PROXIES,}127.0.0.2
  export PORTCULLIS__LOG_FORMAT=${PORTCULLIS__LOG_FORMAT:-json}
  # The admin API and /metrics stay off the proxied listener: each replica gets a loopback port
  # of its own (written to replicaN.ops, which Prometheus scrapes), unless one is given.
  admin_listen=${PORTCULLIS__ADMIN__LISTEN:-}
  export PORTCULLIS__ADMIN__LISTEN=${admin_listen:-127.0.0.1:0}
  "$bin" migrate 2>"$state/migrate.log"
  # The replicas' settings as KEY=VALUE lines, for one-off commands against this stack:
  #   env $(cat "$state/env") portcullis users import accounts.csv
  env | grep '^PORTCULLIS__' | sort >"$state/env"

  : >"$state/portcullis-upstream.conf"
  for i in 1 2 3; do
    port=$(free_port)
    ops=${admin_listen:-127.0.0.1:$(free_port)}
    echo "$ops" >"$state/replica$i.ops"
    PORTCULLIS__SERVER__PORT=$port PORTCULLIS__ADMIN__LISTEN=$ops \
      "$bin" >/dev/null 2>"$state/replica$i.log" &
    echo $! >"$state/replica$i.pid"
    echo "server 127.0.0.1:$port;" >>"$state/portcullis-upstream.conf"
    wait_for "replica $i" curl -fs "http://127.0.0.1:$port/healthz"
  done

  printf 'listen 127.0.0.1:%s;\nproxy_bind 127.0.0.2;\n' "$nginx_port" >"$state/portcullis-server.conf"
  mkdir -p "$state/nginx-temp"
  cat >"$state/nginx.conf" <<CONF
pid $state/nginx.pid;
error_log $state/nginx-error.log;
events {}
http {
    access_log $state/nginx-access.log;
    client_body_temp_path $state/nginx-temp;
    proxy_temp_path $state/nginx-temp;
    fastcgi_temp_path $state/nginx-temp;
    uwsgi_temp_path $state/nginx-temp;
    scgi_temp_path $state/nginx-temp;
    include $repo/deploy/nginx/portcullis.conf;
}
CONF
  nginx -c "$state/nginx.conf" -p "$state"
  wait_for nginx curl -fs "http://127.0.0.1:$nginx_port/healthz"
  [ -n "${PORTCULLIS_STACK_PROMETHEUS_PORT:-}" ] && prometheus_up
  echo "$pg_bin" >"$state/pg_bin"
  touch "$state/up"
  echo "http://127.0.0.1:$nginx_port"
}

# Prometheus on PORTCULLIS_STACK_PROMETHEUS_PORT: deploy/prometheus/prometheus.yml with the
# replicas' operations listeners as targets.
prometheus_up() {
  command -v prometheus >/dev/null || { echo "local-stack: prometheus is not installed (apt-get install prometheus)" >&2; exit 1; }
  local targets
  targets=$(for i in 1 2 3; do printf '"%s",' "$(cat "$state/replica$i.ops")"; done)
  sed -e "s#/etc/prometheus/rules.yml#$repo/deploy/prometheus/rules.yml#" \
      -e "s#\[\"replica1:9090\", \"replica2:9090\", \"replica3:9090\"\]#[${targets%,}]#" \
      "$repo/deploy/prometheus/prometheus.yml" >"$state/prometheus.yml"
  prometheus --config.file="$state/prometheus.yml" --storage.tsdb.path="$state/prometheus" \
    --web.listen-address="127.0.0.1:$PORTCULLIS_STACK_PROMETHEUS_PORT" \
    >"$state/prometheus.log" 2>&1 &
  echo $! >"$state/prometheus.pid"
  wait_for prometheus curl -fs "http://127.0.0.1:$PORTCULLIS_STACK_PROMETHEUS_PORT/-/ready"
}

# SIGTERM (twice: a replica's second one cuts its drain short) lets in-flight requests finish;
# after 5 s, stop waiting.
stop_pids() {
  local pids=()
  for pidfile in "$@"; do
    [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  sleep 0.2
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

down() {
  [ -d "$state" ] || return 0
  [ -f "$state/nginx.pid" ] && nginx -c "$state/nginx.conf" -p "$state" -s quit 2>/dev/null || true
  # The replicas first, while Redis still takes what they hand over. nginx has quit, so nothing
  # is routed to them: a second SIGTERM skips their drain (server.drain_secs).
  stop_pids "$state"/replica*.pid
  stop_pids "$state/redis.pid" "$state/prometheus.pid"
  if [ -f "$state/pg_bin" ]; then
    as_pg "$(cat "$state/pg_bin")/pg_ctl" -D "$state/pg" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$state"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
