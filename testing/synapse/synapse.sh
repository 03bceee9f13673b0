#!/usr/bin/env bash
# A local Synapse for hush's integration tests and demo.
#
#   synapse.sh install   create the virtualenv and install the pinned Synapse (idempotent)
#   synapse.sh start     install if needed, write the config, start, wait until it answers
#   synapse.sh stop      stop it by its recorded PID
#   synapse.sh status    say whether it runs
#   synapse.sh pause     SIGSTOP it (it stops answering, as a server gone offline)
#   synapse.sh resume    SIGCONT it
#
# It listens on 127.0.0.1 only, serves the client API only, federates with
# nobody and trusts no key server (no outbound traffic), uses SQLite, open
# registration without verification (test users only), relaxed rate limits
# and cheap bcrypt. Everything lives under $HUSH_SYNAPSE_DIR
# (default ~/.cache/hush/synapse), outside the repository.
#
# With HUSH_SYNAPSE_FEDERATION_PORT set (see federation.sh), it federates
# instead, on loopback only: its server name is 127.0.0.1:<that port>, where
# it serves federation over TLS with a self-signed certificate, and it
# accepts other servers' certificates unchecked and reaches 127.0.0.0/8
# only (every other address is on its blocklist).
set -euo pipefail

VERSION="1.163.2"
PORT="${HUSH_SYNAPSE_PORT:-8008}"
DIR="${HUSH_SYNAPSE_DIR:-$HOME/.cache/hush/synapse}"
VENV="${HUSH_SYNAPSE_VENV:-$DIR/venv}"
FEDERATION_PORT="${HUSH_SYNAPSE_FEDERATION_PORT:-}"
# The server names it may federate with, space-separated (federation.sh sets them).
FEDERATION_DOMAINS="${HUSH_SYNAPSE_FEDERATION_DOMAINS:-}"
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

# A self-signed certificate for 127.0.0.1, made with the cryptography
# package Synapse depends on (no openssl binary needed).
write_certificate() {
    [ -f "$DATA/tls.crt" ] && return
    "$VENV/bin/python" - "$DATA" <<'PY'
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256()))
open(sys.argv[1] + "/tls.crt", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[1] + "/tls.key", "wb").write(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
PY
}

# The server name, and the federation part of the config (none by default).
federation_config() {
    if [ -z "$FEDERATION_PORT" ]; then
        SERVER_NAME="localhost"
        FEDERATION_YAML="federation_domain_whitelist: []"
        return
    fi
    write_certificate
    # Synapse checks IP-literal server names against its blocklist alone
    # (its allowlist is not consulted there), so the blocklist is every
    # address but 127.0.0.0/8: all of IPv4 around it, and all of IPv6.
    local everywhere_but_loopback='"0.0.0.0/2", "64.0.0.0/3", "96.0.0.0/4", "112.0.0.0/5", "120.0.0.0/6",'
    everywhere_but_loopback+=' "124.0.0.0/7", "126.0.0.0/8", "128.0.0.0/1", "::/0"'
    EVERYWHERE_BUT_LOOPBACK="$everywhere_but_loopback"
    SERVER_NAME="127.0.0.1:$FEDERATION_PORT"
    local domains="" domain
    for domain in ${FEDERATION_DOMAINS:-$SERVER_NAME}; do
        domains+="${domains:+, }\"$domain\""
    done
    FEDERATION_YAML="federation_domain_whitelist: [$domains]
tls_certificate_path: \"$DATA/tls.crt\"
tls_private_key_path: \"$DATA/tls.key\"
federation_verify_certificates: false
ip_range_blacklist: [$EVERYWHERE_BUT_LOOPBACK]
federation:
  client_timeout: 10s
  destination_min_retry_interval: 1s
  destination_max_retry_interval: 5s"
    LISTENERS="$LISTENERS
  - port: $FEDERATION_PORT
    bind_addresses: [\"127.0.0.1\"]
    type: http
    tls: true
    x_forwarded: false
    resources:
      - names: [federation]
        compress: false"
}

write_config() {
    mkdir -p "$DATA/media_store"
    LISTENERS="  - port: $PORT
    bind_addresses: [\"127.0.0.1\"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false"
    federation_config
    cat > "$DATA/homeserver.yaml" <<YAML
server_name: "$SERVER_NAME"
public_baseurl: "$URL/"
pid_file: "$PID_FILE"
listeners:
$LISTENERS
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
# Room for the 100 MB attachment benchmark (cargo xtask bench attachments).
max_upload_size: 200M
trusted_key_servers: []
suppress_key_server_warning: true
$FEDERATION_YAML
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
    # No proxy from the environment: Synapse applies its IP blocklist only
    # to connections it makes itself.
    env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY \
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
        kill -CONT "$pid" 2>/dev/null || true
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

signal() {
    running || { log "not running"; exit 1; }
    kill "-$1" "$(cat "$PID_FILE")"
    log "sent SIG$1"
}

case "${1:-}" in
    install) install ;;
    pause) signal STOP ;;
    resume) signal CONT ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status|pause|resume" >&2; exit 2 ;;
esac
