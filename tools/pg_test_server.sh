#!/usr/bin/env bash
# A private PostgreSQL 15 + PostGIS 3 cluster on loopback, for the fleet tests (and by hand).
#
#   tools/pg_test_server.sh install            apt-get the Debian packages if pg_ctl or PostGIS is missing
#   tools/pg_test_server.sh start [PORT]       initdb into a new temp dir, start on 127.0.0.1:PORT (default: a
#                                              free port), create database `fleet` with PostGIS; prints
#                                              PGDIR=<dir> and URL=postgresql://...
#   tools/pg_test_server.sh restart PGDIR      `pg_ctl restart -m immediate` (a crash: no clean shutdown)
#   tools/pg_test_server.sh stop PGDIR         stop it (immediate) and delete the directory
#
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user that the
# Debian package creates (the directory is created with `mktemp` and given to that user). The
# cluster trusts connections from 127.0.0.1 only (listen_addresses=127.0.0.1, unix socket in PGDIR).
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
POSTGIS_CONTROL=/usr/share/postgresql/15/extension/postgis.control

as_pg() {  # run a server-side command as the server's owner
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
    if [ -x "$PG_BIN/pg_ctl" ] && [ -f "$POSTGIS_CONTROL" ]; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "pg_test_server: PostgreSQL 15 + PostGIS 3 missing; as root run: apt-get install -y postgresql-15 postgresql-15-postgis-3" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq postgresql-15 postgresql-15-postgis-3 >/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    install
    local port=${1:-$(free_port)}
    local dir
    dir=$(mktemp -d /tmp/reloc-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    as_pg "$PG_BIN/pg_ctl" start -D "$dir/data" -w -t 60 -l "$dir/server.log" \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $dir" >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE fleet" >/dev/null
    as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d fleet -v ON_ERROR_STOP=1 \
        -c "CREATE EXTENSION postgis" >/dev/null
    echo "PGDIR=$dir"
    echo "URL=postgresql://postgres@127.0.0.1:$port/fleet"
}

restart() {
    local dir=$1
    as_pg "$PG_BIN/pg_ctl" restart -D "$dir/data" -m immediate -w -t 60 -l "$dir/server.log" \
        -o "-p $(cat "$dir/port") -c listen_addresses=127.0.0.1 -k $dir" >/dev/null
}

stop() {
    local dir=$1
    case "$dir" in /tmp/reloc-pg.*) ;; *) echo "pg_test_server: refusing to remove $dir" >&2; exit 1 ;; esac
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$dir/data" -m immediate -w -t 60 >/dev/null || true  # it is deleted next
    fi
    rm -rf "$dir"
}

cmd=${1:-}
shift || true
case "$cmd" in
    install) install ;;
    start) start "$@" ;;
    restart) restart "$@" ;;
    stop) stop "$@" ;;
    *) echo "usage: $0 install | start [PORT] | restart PGDIR | stop PGDIR" >&2; exit 2 ;;
esac
