#!/usr/bin/env bash
# What consent enforcement and the audit trail cost over HTTP: a GP clinician reading a patient
# registered at the practice (records published by a trust), on the embedded default, this
# build (every answer decided and audited) against an earlier build without them, alternating
# 10-second oha runs so that the shared machine's noise falls on both. Not part of the test run.
#
#   scripts/bench-consent-overhead.sh PATH/TO/OLD/hie-gateway     # e.g. a build of e4696ad
#
# Environment: ROUNDS (default 3), CONNECTIONS (default 10), DURATION (default 10s).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OLD=${1:?usage: $0 PATH/TO/OLD/hie-gateway}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-10}
DURATION=${DURATION:-10s}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hie-consent-bench.XXXXXX")
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
print(f"{s['requestsPerSec']:.0f} req/s, p50 {p['p50'] * 1000:.2f} ms, p99 {p['p99'] * 1000:.2f} ms, statuses {r.get('statusCodeDistribution')}")
PY

# start NAME BINARY: a gateway on a fresh SQLite file with a trust and a GP practice registered;
# the trust publishes the practice, a patient registered there and 20 observations.
start() {
    local dir="$WORK/$1" binary=$2 api ops base trust
    mkdir -p "$dir" && cd "$dir"
    "$binary" certs init --dir certs >/dev/null
    "$binary" certs client --dir certs --name trust --ods R9Z --kind trust > clients.toml 2>/dev/null
    "$binary" certs client --dir certs --name gp --ods Y90001 --kind gp-system >> clients.toml 2>/dev/null
    api=$(free_port); ops=$(free_port)
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\nops_listen = "127.0.0.1:%s"\n' "$api" "$ops"
        printf '[tls]\ngenerate_dev_certificates = false\n[database]\nurl = "sqlite://%s/hie.db"\n[log]\nlevel = "warn"\n' "$dir"
        printf '[auth]\ndev_issuers = true\n'
        cat clients.toml
    } > hie-gateway.toml
    HIE_MLLP_LISTEN=127.0.0.1:0 "$binary" serve > gateway.log 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ops/readyz" >/dev/null && break; sleep 0.1; done
    base="https://127.0.0.1:$api/fhir/r4"
    echo "$base" > base
    "$binary" token --kind clinician --org Y90001 --lifetime 7200 > gp-token
    trust=(--cacert certs/ca.pem --cert certs/clients/trust.pem --key certs/clients/trust.key
        -H "Authorization: Bearer $("$binary" token --kind system --org R9Z --lifetime 7200)" -H 'Content-Type: application/fhir+json')
    curl -sS "${trust[@]}" -X PUT --data '{"resourceType":"Organization","id":"fixture-practice","identifier":[{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"Y90001"}]}' \
        "$base/Organization/fixture-practice" > /dev/null
    curl -sS "${trust[@]}" --data-binary "@$ROOT/tests/fixtures/resources/Patient.json" "$base/Patient" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' > patient
    for _ in $(seq 1 20); do
        python3 -c "import json, sys; o = json.load(open('$ROOT/tests/fixtures/resources/Observation.json')); o['subject'] = {'reference': 'Patient/$(cat patient)'}; print(json.dumps(o))" \
            | curl -sS "${trust[@]}" --data-binary @- "$base/Observation" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' > observation
    done
}
start consent "$NEW"
start before "$OLD"

for target in "Observation/\$(cat observation)" "Observation?patient=Patient/\$(cat patient)&_count=20"; do
    for round in $(seq 1 "$ROUNDS"); do
        for side in consent before; do
            cd "$WORK/$side"
            url="$(cat base)/$(eval echo "$target")"
            printf '%-48s round %s, %-8s ' "$(eval echo "$target" | cut -c1-40)" "$round" "$side:"
            oha -z "$DURATION" -c "$CONNECTIONS" --no-tui --output-format json --cacert certs/ca.pem --cert certs/clients/gp.pem \
                --key certs/clients/gp.key -H "Authorization: Bearer $(cat gp-token)" "$url" | python3 "$WORK/summary.py"
        done
    done
done
cd "$WORK/consent"
echo "audit records written by this build's gateway: $("$NEW" --config hie-gateway.toml audit verify)"
