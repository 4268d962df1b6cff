#!/usr/bin/env bash
# HTTP benchmarks over loopback with oha (not part of the test run): read-by-id over mutual TLS,
# Synthea transaction bundles, idle memory. Results go in BENCHMARKS.md by hand, with the machine.
#
#   scripts/bench.sh sqlite            # the embedded default
#   scripts/bench.sh postgres          # PostgreSQL on 127.0.0.1:5432 (a fresh database)
#
# Environment: DURATION (default 30s), CONNECTIONS (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BACKEND=${1:-sqlite}
DURATION=${DURATION:-30s}
CONNECTIONS=${CONNECTIONS:-10}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hie-bench.XXXXXX")
CLEANUP=()
cleanup() {
    set +e
    for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[$i]}" >/dev/null 2>&1; done
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v oha >/dev/null || cargo install oha --locked
cargo build --release -p gateway --locked -q
GATEWAY="$ROOT/target/release/hie-gateway"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
API_PORT=$(free_port)
OPS_PORT=$(free_port)
cd "$WORK"
"$GATEWAY" certs init --dir certs >/dev/null
"$GATEWAY" certs client --dir certs --name bench --ods R9Z --kind trust > clients.toml 2>/dev/null

case "$BACKEND" in
    sqlite) DATABASE_URL="sqlite://$WORK/hie.db" ;;
    postgres)
        DB="hie_bench_$$"
        psql "postgres://postgres@127.0.0.1:5432/postgres" -qc "create database $DB"
        CLEANUP+=("psql postgres://postgres@127.0.0.1:5432/postgres -qc 'drop database if exists $DB with (force)'")
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
        ;;
    *) echo "usage: $0 sqlite|postgres" >&2; exit 2 ;;
esac

cat > hie-gateway.toml <<EOF
[server]
listen = "127.0.0.1:$API_PORT"
ops_listen = "127.0.0.1:$OPS_PORT"
[mllp]
listen = "127.0.0.1:0"
[tls]
generate_dev_certificates = false
[auth]
dev_issuers = true
[database]
url = "$DATABASE_URL"
[log]
level = "warn"
EOF
cat clients.toml >> hie-gateway.toml

"$GATEWAY" serve > gateway.log 2>&1 &
PID=$!
CLEANUP+=("kill $PID")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null && break; sleep 0.1; done
sleep 2
echo "idle RSS after start: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"

BASE="https://127.0.0.1:$API_PORT/fhir/r4"
# The bench client is a trust's publishing system: its certificate and a development token.
TOKEN=$("$GATEWAY" token --kind system --org R9Z --lifetime 7200)
TLS=(--cacert certs/ca.pem --cert certs/clients/bench.pem --key certs/clients/bench.key -H "Authorization: Bearer $TOKEN")
# status, total seconds, and seconds after the TLS handshake (upload + processing + answer)
post() { curl -sS "${TLS[@]}" -H 'Content-Type: application/fhir+json' -H 'Prefer: return=minimal' -o /dev/null -w '%{http_code} %{time_total} %{time_appconnect}\n' --data-binary "@$1" "$BASE"; }

echo "reference data (Synthea hospitals and practitioners, batch bundles of 2,382 and 1,191 entries):"
for f in hospitalInformation1633536936158.json practitionerInformation1633536936158.json; do
    echo "  $f: $(post "$ROOT/tests/fixtures/synthea/$f" | cut -d' ' -f1,2) s"
done
echo "Synthea patient transactions (238-259 entries each), each of the 8 posted 3 times:"
for round in 1 2 3; do
    for f in "$ROOT"/tests/fixtures/synthea/*_*.json; do post "$f"; done
done > transactions.txt
python3 - transactions.txt <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
totals = sorted(float(total) * 1000 for _, total, _ in rows)
after_tls = sorted((float(total) - float(handshake)) * 1000 for _, total, handshake in rows)
statuses = {status for status, _, _ in rows}
print(f"  statuses {sorted(statuses)}; after the TLS handshake: median {statistics.median(after_tls):.1f} ms, "
      f"min {after_tls[0]:.1f}, max {after_tls[-1]:.1f}; including it: median {statistics.median(totals):.1f} ms")
PY

ID=$(curl -sS "${TLS[@]}" "$BASE/Patient?_count=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["entry"][0]["resource"]["id"])')
echo "read-by-id: Patient/$ID, $CONNECTIONS connections, $DURATION"
oha -z "$DURATION" -c "$CONNECTIONS" --no-tui --output-format json --cacert certs/ca.pem --cert certs/clients/bench.pem \
    --key certs/clients/bench.key -H "Authorization: Bearer $TOKEN" "$BASE/Patient/$ID" > read.json
python3 - read.json <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
print(f"  {s['requestsPerSec']:.0f} req/s, p50 {p['p50']*1000:.2f} ms, p99 {p['p99']*1000:.2f} ms, success {s['successRate']*100:.1f}%, statuses {codes}")
EOF

NHS=$(curl -sS "${TLS[@]}" "$BASE/Patient/$ID" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(next((i["system"]+"|"+i["value"] for i in r.get("identifier",[]) if "system" in i and "value" in i), ""))')
echo "search by identifier: $NHS"
oha -z "$DURATION" -c "$CONNECTIONS" --no-tui --output-format json --cacert certs/ca.pem --cert certs/clients/bench.pem \
    --key certs/clients/bench.key -H "Authorization: Bearer $TOKEN" "$BASE/Patient?identifier=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$NHS")" > search.json
python3 - search.json <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
print(f"  {s['requestsPerSec']:.0f} req/s, p50 {p['p50']*1000:.2f} ms, p99 {p['p99']*1000:.2f} ms, success {s['successRate']*100:.1f}%")
EOF
sleep 3
echo "idle RSS after the load: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
