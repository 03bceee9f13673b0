#!/usr/bin/env bash
# Two Synapses federating with each other on loopback, for the federation
# tests (complement-crypto's federation_connectivity_test.go):
#
#   federation.sh start           start hs1 and hs2 (installing Synapse if needed)
#   federation.sh stop            stop both
#   federation.sh status          say whether both run
#   federation.sh pause hs1|hs2   SIGSTOP one (its server goes offline)
#   federation.sh resume hs1|hs2  SIGCONT it
#
# hs1: client API http://127.0.0.1:8128, server name 127.0.0.1:8129.
# hs2: client API http://127.0.0.1:8138, server name 127.0.0.1:8139.
# Each is synapse.sh with HUSH_SYNAPSE_FEDERATION_PORT set (self-signed TLS
# on the federation port, certificates unchecked, only 127.0.0.0/8 reachable),
# sharing the main test Synapse's virtualenv; data under
# $HUSH_SYNAPSE_DIR/federation/<name>.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BASE="${HUSH_SYNAPSE_DIR:-$HOME/.cache/hush/synapse}"

one() {
    local name="$1" action="$2" client federation
    case "$name" in
        hs1) client=8128; federation=8129 ;;
        hs2) client=8138; federation=8139 ;;
        *) echo "federation.sh: no server $name (hs1 or hs2)" >&2; exit 2 ;;
    esac
    HUSH_SYNAPSE_DIR="$BASE/federation/$name" HUSH_SYNAPSE_VENV="$BASE/venv" \
        HUSH_SYNAPSE_PORT="$client" HUSH_SYNAPSE_FEDERATION_PORT="$federation" \
        HUSH_SYNAPSE_FEDERATION_DOMAINS="127.0.0.1:8129 127.0.0.1:8139" \
        bash "$HERE/synapse.sh" "$action"
}

case "${1:-}" in
    start)
        HUSH_SYNAPSE_DIR="$BASE" bash "$HERE/synapse.sh" install
        one hs1 start
        one hs2 start || { one hs1 stop; exit 1; }
        ;;
    stop)
        one hs1 stop
        one hs2 stop
        ;;
    status) one hs1 status && one hs2 status ;;
    pause | resume) one "${2:-}" "$1" ;;
    *) echo "usage: $0 start|stop|status|pause hsN|resume hsN" >&2; exit 2 ;;
esac
