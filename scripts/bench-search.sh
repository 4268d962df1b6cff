#!/usr/bin/env bash
# Search benchmarks at regional scale (not part of the test run): a fresh PostgreSQL database,
# 100,000 synthetic patients and 1,000,500 resources loaded through the API
# (scripts/load-synthetic.py), then oha over mutual TLS against the hot searches, each URL drawn
# from a list of real values. Results go in BENCHMARKS.md by hand, with the machine.
#
#   scripts/bench-search.sh                  # PostgreSQL on 127.0.0.1:5432
#
# Environment: PATIENTS (default 100000), DURATION (default 20s), CONNECTIONS (default 10),
# KEEP_DB=1 keeps the database (hie_bench_search) for another run with LOAD=0.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PATIENTS=${PATIENTS:-100000}
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-10}
LOAD=${LOAD:-1}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hie-bench-search.XXXXXX")
PG=postgres://postgres@127.0.0.1:5432
DB=hie_bench_search
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

if [ "$LOAD" = 1 ]; then
    psql "$PG/postgres" -qc "drop database if exists $DB with (force)" -qc "create database $DB"
fi
[ "${KEEP_DB:-0}" = 1 ] || CLEANUP+=("psql $PG/postgres -qc 'drop database if exists $DB with (force)'")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
API_PORT=$(free_port)
OPS_PORT=$(free_port)
cd "$WORK"
"$GATEWAY" certs init --dir certs >/dev/null
"$GATEWAY" certs client --dir certs --name bench --ods R9Z --kind trust > clients.toml 2>/dev/null
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
url = "$PG/$DB"
[log]
level = "warn"
EOF
cat clients.toml >> hie-gateway.toml
"$GATEWAY" serve > gateway.log 2>&1 &
PID=$!
CLEANUP+=("kill $PID")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null && break; sleep 0.1; done

BASE="https://127.0.0.1:$API_PORT/fhir/r4"
# The bench client is a trust's publishing system: its certificate and a development token.
TOKEN=$("$GATEWAY" token --kind system --org R9Z --lifetime 7200)
TLS=(--cacert certs/ca.pem --cert certs/clients/bench.pem --key certs/clients/bench.key -H "Authorization: Bearer $TOKEN")
python3 "$ROOT/scripts/load-synthetic.py" --base "$BASE" --ca certs/ca.pem --cert certs/clients/bench.pem \
    --key certs/clients/bench.key --token "$TOKEN" --patients "$PATIENTS" --numbers-out nhs-numbers.txt $([ "$LOAD" = 1 ] || echo --dry-run)
if [ "$LOAD" = 1 ]; then
    psql "$PG/$DB" -qc "VACUUM ANALYZE"
fi
echo "resources: $(psql "$PG/$DB" -Atc 'select count(*) from resources')"

# URL lists: each request searches for another patient.
NHS="https://fhir.nhs.uk/Id/nhs-number"
shuf -n 20000 --random-source=<(yes) nhs-numbers.txt > sample.txt
sed "s#^#$BASE/Patient?identifier=$NHS|#" sample.txt > patient-by-nhs.txt
sed "s#^#$BASE/DocumentReference?patient.identifier=$NHS|#; s#\$#\&type=http://snomed.info/sct|373942005#" sample.txt > docref-chain.txt
python3 -c "
import random
r = random.Random(1)
for _ in range(20000):
    print(f'$BASE/Observation?patient=Patient/p{r.randrange($PATIENTS):06d}&date=ge2020-01-01&_sort=-date&_count=50')
" > observations.txt

run() {
    local name=$1 list=$2
    echo "== $name"
    oha -z "$DURATION" -c "$CONNECTIONS" --no-tui --urls-from-file "$list" \
        --cacert certs/ca.pem --cert certs/clients/bench.pem --key certs/clients/bench.key -H "Authorization: Bearer $TOKEN" \
        | grep -E "Requests/sec|Slowest|Fastest|Average|99.00%|50.00%|\[2[0-9][0-9]\]|\[[45][0-9][0-9]\]"
}
run "Patient?identifier=<NHS number>" patient-by-nhs.txt
run "DocumentReference?patient.identifier=<NHS number>&type=<discharge summary>" docref-chain.txt
run "Observation?patient=<id>&date=ge2020-01-01&_sort=-date&_count=50" observations.txt

echo "== _total=accurate on 100,000 matches (Observation?code=8867-4), 20 requests"
for _ in $(seq 1 20); do
    curl -sS "${TLS[@]}" -o /dev/null -w '%{time_total} %{time_appconnect}\n' \
        "$BASE/Observation?code=http://loinc.org|8867-4&_total=accurate&_count=1"
done | python3 -c "
import statistics, sys
times = [float(a) - float(b) for a, b in (line.split() for line in sys.stdin)]
print(f'median {statistics.median(times) * 1000:.1f} ms after the TLS handshake, min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}')
"
echo "RSS after the run: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
