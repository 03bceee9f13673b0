#!/usr/bin/env bash
# A local Synapse for hush's integration tests and demo.
#
#   synapse.sh install   create the virtualenv and install the pinned Synapse (idempotent)
#   synapse.sh start     install if needed, write the config, start, wait until it answers
#   synapse.sh stop      stop it by its recorded PID
#   synapse.sh status    say whether it runs
#
# It listens on 127.0.0.1 only, serves the client API only, federates with
# nobody and trusts no key server (no outbound traffic), uses SQLite, open
# registration without verification (test users only), relaxed rate limits
# and cheap bcrypt. Everything lives under $HUSH_SYNAPSE_DIR
# (default ~/.cache/hush/synapse), outside the repository.
set -euo pipefail

VERSION="1.163.2"
PORT="${HUSH_SYNAPSE_PORT:-8008}"
DIR="${HUSH_SYNAPSE_DIR:-$HOME/.cache/hush/synapse}"
VENV="$DIR/venv"
DATA="$DIR/data"
PID_FILE="$DATA/homeserver.pid"
URL="http://127.0.0.1:$PORT"

log() { echo "synapse: $*" >&2; }

install() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import synapse, sys; sys.exit(synapse.__version__ != '$VERSION')" 2>/dev/null; then
        return
    fi
    log "installing matrix-synapse $VERSION into $VENV"
    mkdir -p "$DIR"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$VERSION"
}

write_config() {
    mkdir -p "$DATA/media_store"
    cat > "$DATA/homeserver.yaml" <<YAML
server_name: "localhost"
public_baseurl: "$URL/"
pid_file: "$PID_FILE"
listeners:
  - port: $PORT
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "$DATA/homeserver.db"
log_config: "$DATA/log.yaml"
media_store_path: "$DATA/media_store"
signing_key_path: "$DATA/signing.key"
report_stats: false
macaroon_secret_key: "hush-test-macaroon-secret"
form_secret: "hush-test-form-secret"
registration_shared_secret: "hush-test-registration-secret"
enable_registration: true
enable_registration_without_verification: true
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
bcrypt_rounds: 4
url_preview_enabled: false
presence:
  enabled: false
rc_message: {per_second: 10000, burst_count: 10000}
rc_registration: {per_second: 10000, burst_count: 10000}
rc_registration_token_validity: {per_second: 10000, burst_count: 10000}
rc_login:
  address: {per_second: 10000, burst_count: 10000}
  account: {per_second: 10000, burst_count: 10000}
  failed_attempts: {per_second: 10000, burst_count: 10000}
rc_joins:
  local: {per_second: 10000, burst_count: 10000}
  remote: {per_second: 10000, burst_count: 10000}
rc_joins_per_room: {per_second: 10000, burst_count: 10000}
rc_invites:
  per_room: {per_second: 10000, burst_count: 10000}
  per_user: {per_second: 10000, burst_count: 10000}
  per_issuer: {per_second: 10000, burst_count: 10000}
rc_key_requests: {per_second: 10000, burst_count: 10000}
rc_room_creation: {per_second: 10000, burst_count: 10000}
rc_delayed_event_mgmt: {per_second: 10000, burst_count: 10000}
YAML
    cat > "$DATA/log.yaml" <<YAML
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "$DATA/homeserver.log"
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
YAML
}

running() {
    [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null
}

answering() {
    python3 - "$URL" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/_matrix/client/versions", timeout=2).read()
PY
}

start() {
    install
    if running && answering; then
        log "already running at $URL"
        return
    fi
    write_config
    if [ ! -f "$DATA/signing.key" ]; then
        "$VENV/bin/python" -m synapse.app.homeserver --config-path "$DATA/homeserver.yaml" --generate-keys >/dev/null
    fi
    log "starting at $URL"
    nohup "$VENV/bin/python" -m synapse.app.homeserver --config-path "$DATA/homeserver.yaml" \
        > "$DATA/stdout.log" 2>&1 &
    echo $! > "$PID_FILE"
    for _ in $(seq 1 120); do
        if answering; then
            log "up (pid $(cat "$PID_FILE"))"
            return
        fi
        if ! running; then
            log "Synapse exited; its output:"
            tail -n 40 "$DATA/stdout.log" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    log "Synapse did not answer within 60 s"
    exit 1
}

stop() {
    if running; then
        local pid
        pid="$(cat "$PID_FILE")"
        kill "$pid"
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -9 "$pid" 2>/dev/null || true
        log "stopped"
    else
        log "not running"
    fi
    rm -f "$PID_FILE"
}

status() {
    if running && answering; then
        echo "running at $URL (pid $(cat "$PID_FILE"))"
    else
        echo "not running"
        return 1
    fi
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
