#!/usr/bin/env bash
# What bearer tokens cost over HTTP: read-by-id over mutual TLS on the embedded default, this
# build with a bearer token against an earlier build without tokens (mTLS only), alternating
# 10-second oha runs so that the shared machine's noise falls on both. Not part of the test run.
#
#   scripts/bench-token-overhead.sh PATH/TO/OLD/hie-gateway     # e.g. a build of f390f55
#
# Environment: ROUNDS (default 3), CONNECTIONS (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OLD=${1:?usage: $0 PATH/TO/OLD/hie-gateway}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-10}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hie-token-bench.XXXXXX")
PIDS=()
cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v oha >/dev/null || cargo install oha --locked
cargo build --release -p gateway --locked -q
NEW="$ROOT/target/release/hie-gateway"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
cat > "$WORK/summary.py" <<'PY'
import json, sys
r = json.load(sys.stdin)
s, p = r["summary"], r["latencyPercentiles"]
print(f"{s['requestsPerSec']:.0f} req/s, p99 {p['p99'] * 1000:.2f} ms, statuses {r.get('statusCodeDistribution')}")
PY

# start NAME BINARY WITH_TOKENS: a gateway on a fresh SQLite file, one Patient stored.
start() {
    local dir="$WORK/$1" binary=$2 tokens=$3 api ops
    mkdir -p "$dir" && cd "$dir"
    "$binary" certs init --dir certs >/dev/null
    "$binary" certs client --dir certs --name bench --ods R9Z --kind trust > clients.toml 2>/dev/null
    api=$(free_port); ops=$(free_port)
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\nops_listen = "127.0.0.1:%s"\n' "$api" "$ops"
        printf '[tls]\ngenerate_dev_certificates = false\n[database]\nurl = "sqlite://%s/hie.db"\n[log]\nlevel = "warn"\n' "$dir"
        if [ "$tokens" = 1 ]; then printf '[auth]\ndev_issuers = true\n'; fi
        cat clients.toml
    } > hie-gateway.toml
    # (an environment variable: a build from before the MLLP listener refuses an [mllp] section)
    HIE_MLLP_LISTEN=127.0.0.1:0 "$binary" serve > gateway.log 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ops/readyz" >/dev/null && break; sleep 0.1; done
    echo "https://127.0.0.1:$api/fhir/r4" > base
    HEADERS=()
    if [ "$tokens" = 1 ]; then
        HEADERS=(-H "Authorization: Bearer $("$binary" token --kind system --org R9Z --lifetime 7200)")
    fi
    : > headers
    if [ ${#HEADERS[@]} -gt 0 ]; then printf '%s\n' "${HEADERS[@]}" > headers; fi
    curl -sS --cacert certs/ca.pem --cert certs/clients/bench.pem --key certs/clients/bench.key "${HEADERS[@]}" \
        -H 'Content-Type: application/fhir+json' --data-binary "@$ROOT/tests/fixtures/resources/Patient.json" "$(cat base)/Patient" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' > id
}
start with-token "$NEW" 1
start mtls-only "$OLD" 0

for round in $(seq 1 "$ROUNDS"); do
    for side in with-token mtls-only; do
        cd "$WORK/$side"
        mapfile -t HEADERS < headers
        printf 'round %s, %-10s ' "$round" "$side:"
        oha -z 10s -c "$CONNECTIONS" --no-tui --output-format json --cacert certs/ca.pem --cert certs/clients/bench.pem \
            --key certs/clients/bench.key "${HEADERS[@]}" "$(cat base)/Patient/$(cat id)" | python3 "$WORK/summary.py"
    done
done
