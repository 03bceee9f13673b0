#!/usr/bin/env bash
# A private PostgreSQL cluster for hush's store tests and benchmarks.
#
#   postgres.sh install   install Debian's postgresql package if no server is installed
#   postgres.sh start     install if needed, create the cluster once, start it, wait until it answers
#   postgres.sh stop      stop it by the PID it recorded (postmaster.pid)
#   postgres.sh status    say whether it runs
#   postgres.sh url       print the connection URL the tests use
#
# The cluster is hush's own: its own data directory, its own port
# (HUSH_POSTGRES_PORT, default 8150), listening on 127.0.0.1 only, with a
# password login for the user hush (password hush) and a database hush. It
# runs with fsync off: the tests kill clients, never the server or the
# machine, so the server's own crash safety is not what they measure. The
# server refuses to run as root, so as root the cluster belongs to Debian's
# postgres user. Nothing here touches another cluster on the machine.
set -euo pipefail

PORT="${HUSH_POSTGRES_PORT:-8150}"
if [ "$(id -u)" = 0 ]; then
    DIR="${HUSH_POSTGRES_DIR:-/var/tmp/hush-postgres}"
else
    DIR="${HUSH_POSTGRES_DIR:-$HOME/.cache/hush/postgres}"
fi
DATA="$DIR/data"
PASSWORD="hush"
URL="postgres://hush:$PASSWORD@127.0.0.1:$PORT/hush"

log() { echo "postgres: $*" >&2; }

bindir() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ]; then
            echo "$dir"
        fi
    done | sort -V | tail -n 1
}

install() {
    if [ -n "$(bindir)" ]; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        log "no PostgreSQL server is installed; install Debian's postgresql package (as root: apt-get install postgresql)"
        exit 1
    fi
    log "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    if [ -z "$(bindir)" ]; then
        log "the postgresql package installed no initdb"
        exit 1
    fi
}

# Runs a server program as the cluster's owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pid() {
    [ -f "$DATA/postmaster.pid" ] && head -n 1 "$DATA/postmaster.pid"
}

running() {
    local p
    p="$(pid 2>/dev/null)" || return 1
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null
}

create_cluster() {
    [ -f "$DATA/PG_VERSION" ] && return
    local bin
    bin="$(bindir)"
    log "creating a cluster in $DATA"
    mkdir -p "$DIR"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$DIR"
    fi
    local pwfile="$DIR/pwfile"
    echo "$PASSWORD" > "$pwfile"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$pwfile"
    fi
    as_owner "$bin/initdb" -D "$DATA" -U hush --auth=scram-sha-256 --pwfile="$pwfile" -E UTF8 --no-locale >/dev/null
    rm -f "$pwfile"
}

start() {
    install
    if running; then
        log "already running on 127.0.0.1:$PORT"
        return
    fi
    create_cluster
    local bin
    bin="$(bindir)"
    as_owner "$bin/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start -o \
        "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR -c fsync=off -c full_page_writes=off -c max_connections=200" >/dev/null
    if ! PGPASSWORD="$PASSWORD" "$bin/psql" -h 127.0.0.1 -p "$PORT" -U hush -d postgres -qtAc \
        "SELECT 1 FROM pg_database WHERE datname = 'hush'" | grep -q 1; then
        PGPASSWORD="$PASSWORD" "$bin/psql" -h 127.0.0.1 -p "$PORT" -U hush -d postgres -qc "CREATE DATABASE hush" >/dev/null
    fi
    log "running on 127.0.0.1:$PORT (pid $(pid)); stop it with: bash testing/postgres/postgres.sh stop"
}

stop() {
    if ! running; then
        log "not running"
        return
    fi
    local p
    p="$(pid)"
    # SIGINT: PostgreSQL's fast shutdown (clients disconnected, clean stop).
    kill -INT "$p"
    for _ in $(seq 1 300); do
        kill -0 "$p" 2>/dev/null || { log "stopped (pid $p)"; return; }
        sleep 0.1
    done
    log "pid $p did not stop within 30 s"
    exit 1
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) if running; then log "running on 127.0.0.1:$PORT (pid $(pid))"; else log "not running"; exit 1; fi ;;
    url) echo "$URL" ;;
    *) echo "usage: $0 install|start|stop|status|url" >&2; exit 2 ;;
esac
