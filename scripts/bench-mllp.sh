#!/usr/bin/env bash
# HL7 v2 over MLLP, end to end (not part of the test run): a release gateway, N senders on their
# own connections over loopback, each message ACKed only after it is committed; then every
# message sent again (nothing may change). Prints messages/s and ACK latency, and the store's
# counts after each pass. Results go in BENCHMARKS.md by hand, with the machine.
#
#   scripts/bench-mllp.sh postgres [MESSAGES] [SENDERS]   # default 10000 messages, 4 senders
#   scripts/bench-mllp.sh sqlite   [MESSAGES] [SENDERS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BACKEND=${1:-postgres}
MESSAGES=${2:-10000}
SENDERS=${3:-4}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hie-bench-mllp.XXXXXX")
CLEANUP=()
cleanup() {
    set +e
    for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[$i]}" >/dev/null 2>&1; done
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -p gateway --locked -q --bin hie-gateway --example mllp_load
GATEWAY="$ROOT/target/release/hie-gateway"
LOAD="$ROOT/target/release/examples/mllp_load"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
API_PORT=$(free_port)
OPS_PORT=$(free_port)
MLLP_PORT=$(free_port)
cd "$WORK"
"$GATEWAY" certs init --dir certs >/dev/null
"$GATEWAY" certs client --dir certs --name bench --ods R9Z --kind trust > clients.toml 2>/dev/null

case "$BACKEND" in
    sqlite) DATABASE_URL="sqlite://$WORK/hie.db" ;;
    postgres)
        DB="hie_bench_mllp_$$"
        psql "postgres://postgres@127.0.0.1:5432/postgres" -qc "create database $DB"
        CLEANUP+=("psql postgres://postgres@127.0.0.1:5432/postgres -qc 'drop database if exists $DB with (force)'")
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
        ;;
    *) echo "usage: $0 postgres|sqlite [MESSAGES] [SENDERS]" >&2; exit 2 ;;
esac

cat > hie-gateway.toml <<TOML
[server]
listen = "127.0.0.1:$API_PORT"
ops_listen = "127.0.0.1:$OPS_PORT"
[mllp]
listen = "127.0.0.1:$MLLP_PORT"
[tls]
generate_dev_certificates = false
[auth]
dev_issuers = true
[database]
url = "$DATABASE_URL"
[log]
level = "warn"
TOML
cat clients.toml >> hie-gateway.toml

"$GATEWAY" serve > gateway.log 2>&1 &
PID=$!
CLEANUP+=("kill $PID")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null && break; sleep 0.1; done

BASE="https://127.0.0.1:$API_PORT/fhir/r4"
TOKEN=$("$GATEWAY" token --kind system --org R9Z --lifetime 7200)
count() {
    curl -sS --cacert certs/ca.pem --cert certs/clients/bench.pem --key certs/clients/bench.key -H "Authorization: Bearer $TOKEN" \
        "$BASE/$1?_summary=count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'
}
counts() { echo "  store: Patient $(count Patient), Encounter $(count Encounter), Observation $(count Observation), Provenance $(count Provenance)"; }

"$LOAD" "127.0.0.1:$MLLP_PORT" "$MESSAGES" "$SENDERS" | while read -r line; do echo "$line"; counts; done
curl -sf "http://127.0.0.1:$OPS_PORT/metrics" | grep '^hie_hl7v2_messages_total' || true
