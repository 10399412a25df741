#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests (Debian's postgresql package, installed by
# install-test-deps.sh) on 127.0.0.1:${AF_TEST_PG_PORT:-55432} with trust authentication, unless
# one already answers there, and prints the URL tests take from AF_TEST_POSTGRES_URL.
# Each test creates and drops its own database on it. PostgreSQL refuses to run as root, so as root
# the server runs as the postgres user.
set -euo pipefail
PORT=${AF_TEST_PG_PORT:-55432}
DIR=${AF_TEST_PG_DIR:-/tmp/af-test-pg}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$BIN" ] || { echo "postgres.sh: PostgreSQL is not installed (scripts/install-test-deps.sh)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  if [ ! -f "$DIR/PG_VERSION" ]; then
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    as_pg "$BIN/initdb" -D "$DIR" -U postgres --auth=trust >/dev/null
  fi
  as_pg "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off" start >/dev/null
fi
echo "$URL"
