#!/usr/bin/env bash
# The test command (README, .ci/run). It sets up what it needs on a fresh machine, runs every
# check, and leaves nothing running that it started:
#   - PostgreSQL and Redis: uses the ones on 127.0.0.1:5432 / :6379 when they answer, else
#     installs them (Debian packages) if missing and starts private ones; a private PostgreSQL
#     is always started for the restart fault test, which stops and starts it;
#   - the Node and Python test tools in tests/tools (independent validators, schemathesis, the
#     OpenID provider, playwright-core) and Debian's chromium for the portal's browser test;
#   - cargo-nextest if missing.
# Then: rustfmt, clippy -D warnings, the generated-table check, unit tests, the black-box suite
# on SQLite and on PostgreSQL (each test on a fresh database), doc tests, and schemathesis
# against a running gateway.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RUN_ID="$(date +%s)_$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hie-test.XXXXXX")
chmod 755 "$WORK"
CLEANUP=()

log() { printf '\n==> %s\n' "$*"; }

cleanup() {
    local status=$?
    set +e
    for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUP[$i]}" >/dev/null 2>&1
    done
    rm -rf "$WORK"
    exit $status
}
trap cleanup EXIT

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

apt_install() {
    log "installing $* (Debian packages)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
        || { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; }
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# --- toolchain -------------------------------------------------------------------------------
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi
command -v node >/dev/null || apt_install nodejs npm
command -v python3 >/dev/null || apt_install python3 python3-venv

# --- PostgreSQL --------------------------------------------------------------------------------
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    apt_install postgresql postgresql-client
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
if [ "$(id -u)" = 0 ]; then PG_USER=postgres; else PG_USER=$(id -un); fi
pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A private cluster: trust authentication, loopback only, its own port (left in PRIVATE_PORT).
start_private_postgres() {
    local dir=$1
    PRIVATE_PORT=$(free_port)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    pg_as_owner "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
    pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-p $PRIVATE_PORT -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    CLEANUP+=("pg_as_owner '$PG_BIN/pg_ctl' -D '$dir/data' -m immediate stop")
}

if psql "postgres://postgres@127.0.0.1:5432/postgres" -Atc 'select 1' >/dev/null 2>&1; then
    log "using PostgreSQL on 127.0.0.1:5432"
    PG_PORT=5432
else
    log "starting a private PostgreSQL"
    start_private_postgres "$WORK/pg-main"
    PG_PORT=$PRIVATE_PORT
fi
export HIE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export HIE_TEST_DB_PREFIX="hie_test_$RUN_ID"
CLEANUP+=("drop_test_databases")
drop_test_databases() {
    psql "$HIE_TEST_POSTGRES_URL" -Atc "select datname from pg_database where datname like '${HIE_TEST_DB_PREFIX}%'" \
        | while read -r db; do psql "$HIE_TEST_POSTGRES_URL" -qc "drop database if exists \"$db\" with (force)"; done
}

log "starting a private PostgreSQL for the restart fault test"
FAULT_DIR="$WORK/pg-fault"
start_private_postgres "$FAULT_DIR"
FAULT_PORT=$PRIVATE_PORT
export HIE_TEST_PG_RESTART_URL="postgres://postgres@127.0.0.1:$FAULT_PORT/postgres"
if [ "$(id -u)" = 0 ]; then RUNAS="runuser -u postgres --"; else RUNAS=""; fi
export HIE_TEST_PG_STOP="$RUNAS $PG_BIN/pg_ctl -D $FAULT_DIR/data -m fast -w stop"
export HIE_TEST_PG_START="$RUNAS $PG_BIN/pg_ctl -D $FAULT_DIR/data -l $FAULT_DIR/log -w -o '-p $FAULT_PORT -k $FAULT_DIR -c listen_addresses=127.0.0.1' start"

# --- Redis -------------------------------------------------------------------------------------
command -v redis-server >/dev/null || apt_install redis-server
if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    log "using Redis on 127.0.0.1:6379"
    REDIS_PORT=6379
else
    REDIS_PORT=$(free_port)
    log "starting a private Redis on $REDIS_PORT"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log" --dir "$WORK"
    CLEANUP+=("redis-cli -h 127.0.0.1 -p $REDIS_PORT shutdown nosave")
fi
export HIE_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/15"

# --- test tools ----------------------------------------------------------------------------------
log "installing the Node and Python test tools"
npm ci --prefix tests/tools --no-audit --no-fund --loglevel=error
[ -x tests/tools/.venv/bin/python ] || python3 -m venv tests/tools/.venv
tests/tools/.venv/bin/pip install -q --disable-pip-version-check -r tests/tools/requirements.txt
export HIE_R4_EXAMPLES_DIR="$ROOT/tests/tools/node_modules/hl7.fhir.r4.examples"
export HIE_TEST_TOOLS_DIR="$ROOT/tests/tools"
command -v chromium >/dev/null || apt_install chromium
export HIE_TEST_CHROMIUM="$(command -v chromium)"

# --- static checks -------------------------------------------------------------------------------
log "rustfmt"
cargo fmt --all -- --check
log "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "generated FHIR tables are up to date"
python3 scripts/generate-fhir-tables.py "$HIE_R4_EXAMPLES_DIR" --check

# --- tests -----------------------------------------------------------------------------------------
log "unit tests"
cargo nextest run --workspace --exclude tests --locked --profile ci
log "black-box tests on SQLite"
HIE_TEST_DATABASE=sqlite cargo nextest run -p tests --locked --profile ci
log "black-box tests on PostgreSQL"
HIE_TEST_DATABASE=postgres cargo nextest run -p tests --locked --profile ci
log "doc tests"
cargo test --workspace --doc --locked -q

# --- schemathesis against a running gateway ----------------------------------------------------
log "schemathesis against openapi.yaml and a running gateway"
cargo build -p gateway --locked -q
GATEWAY="$ROOT/target/debug/hie-gateway"
SCHEMA_DIR="$WORK/schemathesis"
mkdir -p "$SCHEMA_DIR"
(cd "$SCHEMA_DIR" && "$GATEWAY" certs init --dir certs >/dev/null \
    && "$GATEWAY" certs client --dir certs --name fuzzer --ods Y90001 --kind trust > clients.toml 2>/dev/null)
API_PORT=$(free_port)
OPS_PORT=$(free_port)
cat > "$SCHEMA_DIR/hie-gateway.toml" <<EOF
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
url = "sqlite://$SCHEMA_DIR/hie.db"
[log]
level = "warn"
EOF
cat "$SCHEMA_DIR/clients.toml" >> "$SCHEMA_DIR/hie-gateway.toml"
(cd "$SCHEMA_DIR" && exec "$GATEWAY" serve --demo --demo-patients 5 > gateway.log 2>&1) &
GATEWAY_PID=$!
CLEANUP+=("kill $GATEWAY_PID")
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null || { cat "$SCHEMA_DIR/gateway.log"; exit 1; }
# The fuzzer is a trust's publishing system: its certificate and a development system token.
TOKEN=$(cd "$SCHEMA_DIR" && "$GATEWAY" token --kind system --org Y90001 --lifetime 7200)
# One worker: with several threads, hypothesis's ast.parse can hit CPython 3.11's "AST constructor
# recursion depth mismatch" SystemError (python/cpython#106905, fixed after 3.11.7), which fails
# the run for nothing the gateway did.
(cd "$SCHEMA_DIR" && "$ROOT/tests/tools/.venv/bin/schemathesis" run "$ROOT/openapi.yaml" \
    --url "https://127.0.0.1:$API_PORT" \
    --header "Authorization: Bearer $TOKEN" \
    --request-cert certs/clients/fuzzer.pem --request-cert-key certs/clients/fuzzer.key \
    --tls-verify certs/ca.pem \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
    --max-examples 100 --workers 1 --request-timeout 20 \
    --generation-database none --seed 1 --no-color)
kill "$GATEWAY_PID"
wait "$GATEWAY_PID" 2>/dev/null || true
# The gateway's own errors (5xx); actix-http logs malformed requests from the fuzzer too.
if grep '"level":"ERROR"' "$SCHEMA_DIR/gateway.log" | grep -q '"target":"gateway'; then
    echo "the gateway logged errors during the schemathesis run:" >&2
    grep '"level":"ERROR"' "$SCHEMA_DIR/gateway.log" | grep '"target":"gateway' | head -20 >&2
    exit 1
fi

log "all checks passed"
