#!/usr/bin/env bash
# Starts the real services the tests use — PostgreSQL 15 and Redis 7 — on free
# loopback ports with temporary data dirs, and prints `export` lines for:
#   JOULE_TEST_PG_URL     postgresql://joule@127.0.0.1:PORT/joule
#   JOULE_TEST_REDIS_URL  redis://127.0.0.1:PORT/0
#   JOULE_TEST_SERVICES_DIR (pass to `scripts/test-services.sh stop DIR`)
# Usage: eval "$(scripts/test-services.sh start)"; …; scripts/test-services.sh stop "$JOULE_TEST_SERVICES_DIR"
set -euo pipefail

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir; dir=$(mktemp -d /tmp/joule-services.XXXXXX)
  chmod 755 "$dir"
  # PostgreSQL refuses to run as root: run it as the postgres user from the package.
  local pgbin; pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  local pgport; pgport=$(free_port)
  mkdir -p "$dir/pg"; chown postgres:postgres "$dir/pg"
  local as_pg=(runuser -u postgres --)
  [[ $(id -u) -eq 0 ]] || as_pg=()
  "${as_pg[@]}" "$pgbin/initdb" -D "$dir/pg/data" -U postgres -A trust --no-sync >"$dir/pg-init.log" 2>&1
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 start \
    -o "-p $pgport -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off" >"$dir/pg-start.log" 2>&1
  "${as_pg[@]}" "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -q \
    -c "CREATE ROLE joule LOGIN SUPERUSER" -c "CREATE DATABASE joule OWNER joule" >/dev/null
  echo "$pgbin" > "$dir/pgbin"

  local redisport; redisport=$(free_port)
  redis-server --port "$redisport" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  for _ in $(seq 50); do redis-cli -p "$redisport" ping >/dev/null 2>&1 && break; sleep 0.1; done

  echo "export JOULE_TEST_PG_URL=postgresql://joule@127.0.0.1:$pgport/joule"
  echo "export JOULE_TEST_REDIS_URL=redis://127.0.0.1:$redisport/0"
  echo "export JOULE_TEST_SERVICES_DIR=$dir"
}

stop() {
  local dir="$1"
  [[ -d "$dir" ]] || return 0
  if [[ -f "$dir/redis.pid" ]]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
  if [[ -f "$dir/pgbin" ]]; then
    local as_pg=(runuser -u postgres --)
    [[ $(id -u) -eq 0 ]] || as_pg=()
    "${as_pg[@]}" "$(cat "$dir/pgbin")/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:?services dir}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
