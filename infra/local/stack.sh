#!/usr/bin/env bash
# The local stack: PostgreSQL 15, the Snowflake emulator (fakesnow behind a
# compatibility layer) and the AWS emulator (moto: SQS and SES), on loopback
# only, each on a free port. Installs what is missing.
#
#   infra/local/stack.sh up     [--dir DIR] [--tls]   start (or keep) the stack; print its endpoints
#                                   (--tls: Postgres serves TLS only, with a self-signed certificate,
#                                   and stack.env says PGSSLMODE=require, as deployed; `make bench`)
#   infra/local/stack.sh down   [--dir DIR]   stop it and delete its data
#   infra/local/stack.sh status [--dir DIR]
#   infra/local/stack.sh env    [--dir DIR]   print the environment file's path
#
# The environment of a running stack is in DIR/stack.env (default
# .local/stack): `source` it to point psql, the AWS CLI and the `countries`
# commands at the stack.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# STACK_VENV: an existing environment to use instead (the tests reuse the
# checkout's when they start a stack from a fresh clone).
VENV="${STACK_VENV:-$ROOT/.local/venv}"
# The local changes queue's redrive, after this many receives (the writer is
# told the same number).
CHANGES_MAX_RECEIVES=5
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
STATE="$ROOT/.local/stack"
PG_TLS=0

command="${1:-}"
shift || true
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) STATE="$2"; shift 2 ;;
    --tls) PG_TLS=1; shift ;;
    *) echo "stack.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
# An absolute path without creating anything: `down` and `status` must not
# make the folder they were pointed at.
case "$STATE" in /*) ;; *) STATE="$PWD/$STATE" ;; esac
STATE="${STATE%/}"
ENV_FILE="$STATE/stack.env"
# What marks a folder as a stack this script made: `down` deletes nothing else.
MARKER="$STATE/.countries-stack"

log() { printf '[stack] %s\n' "$*" >&2; }

# Tests make a start-up fail after a named step (STACK_FAIL_AFTER=postgres)
# to check that whatever was started is stopped again.
fail_point() {
  if [ "${STACK_FAIL_AFTER:-}" = "$1" ]; then die "failing after $1 (STACK_FAIL_AFTER)"; fi
}
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install it by hand, then run again)"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_system_packages() {
  local missing=()
  [ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15)
  command -v psql >/dev/null || missing+=(postgresql-client-15)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

ensure_python_env() {
  # shellcheck disable=SC1091
  . "$ROOT/infra/deploy/python-env.sh"
  ensure_requirements "$ROOT/infra/local/requirements.txt" "$VENV"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() { # port name pidfile
  local i
  for i in $(seq 1 150); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $1)))" 2>/dev/null; then
      return 0
    fi
    if [ -n "${3:-}" ] && ! kill -0 "$(cat "$3" 2>/dev/null)" 2>/dev/null; then
      die "$2 exited while starting; see $STATE/$2.log"
    fi
    sleep 0.1
  done
  die "$2 did not open port $1 within 15 s; see $STATE/$2.log"
}

# Postgres refuses to run as root: run it as the `postgres` user the Debian
# package creates, from a data directory that user owns.
pg_run() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local port data
  port="$(free_port)"
  data="$STATE/pg"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$STATE"; then
    # A checkout under a folder the postgres user cannot enter.
    data="$(mktemp -d /tmp/countries-pg.XXXXXX)"
  fi
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown postgres: "$data"
  echo "$data" > "$STATE/pg.datadir"
  # Everything the server reads sits in $data, which its user can enter even
  # when the checkout is in a folder it cannot (root's 0700 home).
  echo "postgres" > "$data/pwfile"
  [ "$(id -u)" = 0 ] && chown postgres: "$data/pwfile"
  chmod 600 "$data/pwfile"
  if ! pg_run "$PG_BIN/initdb" -D "$data/data" -U postgres --pwfile="$data/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$STATE/postgres-init.log" 2>&1; then
    sed 's/^/[stack]   /' "$STATE/postgres-init.log" >&2
    die "initdb failed (above). If it cannot read a file, the postgres user cannot reach the path: clone somewhere it can, or report this with the lines above"
  fi
  cat >>"$data/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
# A throwaway cluster: durability buys nothing here.
fsync = off
full_page_writes = off
synchronous_commit = off
max_connections = 200
CONF
  if [ "$PG_TLS" = 1 ]; then
    # A self-signed certificate: the clients use PGSSLMODE=require (encrypt,
    # no checks), so the handshake and the encryption are measured, as
    # deployed, without a CA to install.
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
      -keyout "$data/server.key" -out "$data/server.crt" >/dev/null 2>&1 \
      || die "openssl could not make the stack's TLS certificate"
    [ "$(id -u)" = 0 ] && chown postgres: "$data/server.key" "$data/server.crt"
    chmod 600 "$data/server.key"
    cat >>"$data/data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = '$data/server.crt'
ssl_key_file = '$data/server.key'
CONF
    # TLS only: a client that would fall back to plain text is refused.
    sed -i 's/^host /hostssl /' "$data/data/pg_hba.conf"
    echo require > "$STATE/pg.sslmode"
  else
    echo disable > "$STATE/pg.sslmode"
  fi
  pg_run "$PG_BIN/pg_ctl" -D "$data/data" -l "$data/postgres.log" -w -t 30 start >/dev/null \
    || { tail -n 20 "$data/postgres.log" | sed 's/^/[stack]   /' >&2; die "Postgres did not start (its log above): a port clash or a full disk are the usual causes; run \`infra/local/stack.sh down\` and try again"; }
  echo "$port" > "$STATE/pg.port"
  PGSSLMODE=prefer PGPASSWORD=postgres psql -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE ROLE countries LOGIN CREATEROLE PASSWORD 'countries';
CREATE DATABASE countries OWNER countries;
SQL
  migrate_postgres "$port"
  log "Postgres 15 on 127.0.0.1:$port"
}

# The schema as production gets it: `countries migrate` (refinery and its
# version table), as the tables' owner, who may also create the app role.
# Also run on a stack already up, so that a checkout adding a migration
# finds its schema current.
migrate_postgres() {
  PGHOST=127.0.0.1 PGPORT="$1" PGDATABASE=countries PGUSER=countries PGPASSWORD=countries \
    PGSSLMODE="$(cat "$STATE/pg.sslmode")" "$(countries_bin)" migrate >/dev/null \
    || die "migrating the stack's Postgres failed (the error above)"
}

# The operator command: COUNTRIES_BIN when the caller built it already (the
# tests, the benchmark), else a debug build of this checkout.
countries_bin() {
  if [ -n "${COUNTRIES_BIN:-}" ]; then
    echo "$COUNTRIES_BIN"
    return
  fi
  cargo build --quiet --locked -p countries-cli --bin countries >&2 \
    || die "building the countries command failed (the error above)"
  echo "${CARGO_TARGET_DIR:-$ROOT/target}/debug/countries"
}

start_fakesnow() {
  local port
  port="$(free_port)"
  # The protocol fake in front of the emulator: results over
  # SNOWFLAKE_FAKE_CHUNK_ROWS rows arrive as an inline part and chunks, as
  # real Snowflake sends them; tests switch its faults on over /fake/.
  nohup "$VENV/bin/python" "$ROOT/infra/local/snowflake_fake.py" --port "$port" \
    --chunk-rows "${SNOWFLAKE_FAKE_CHUNK_ROWS:-25000}" --inline-rows "${SNOWFLAKE_FAKE_INLINE_ROWS:-5000}" \
    >"$STATE/fakesnow.log" 2>&1 &
  echo $! > "$STATE/fakesnow.pid"
  echo "$port" > "$STATE/fakesnow.port"
  wait_for_port "$port" fakesnow "$STATE/fakesnow.pid"
  SNOWFLAKE_ENDPOINT_URL="http://127.0.0.1:$port" SNOWFLAKE_ACCOUNT=fakesnow SNOWFLAKE_USER=setup \
    SNOWFLAKE_PASSWORD=local SNOWFLAKE_DATABASE=COUNTRIES SNOWFLAKE_SCHEMA=PUBLIC \
    "$(countries_bin)" local snowflake 2>"$STATE/setup.log" \
    || { sed 's/^/[stack]   /' "$STATE/setup.log" >&2; die "setting up the Snowflake emulator failed (above)"; }
  log "Snowflake protocol fake (fakesnow behind it) on http://127.0.0.1:$port"
}

start_moto() {
  local port
  port="$(free_port)"
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$STATE/moto.log" 2>&1 &
  echo $! > "$STATE/moto.pid"
  echo "$port" > "$STATE/moto.port"
  wait_for_port "$port" moto "$STATE/moto.pid"
  # The queues as template.yaml declares them, with shorter visibility
  # timeouts and the changes queue's redrive after 5 receives, so that a
  # message that fails comes back, and a poison one reaches its dead-letter
  # queue, in seconds.
  AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing \
    AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
    "$(countries_bin)" local queues \
    --set RetryQueueVisibilityTimeout=30 --set ChangesQueueVisibilityTimeout=30 --set ChangesMaxReceiveCount="$CHANGES_MAX_RECEIVES" \
    >"$STATE/aws.json" 2>"$STATE/setup.log" \
    || { sed 's/^/[stack]   /' "$STATE/setup.log" >&2; die "setting up the AWS emulator failed (above)"; }
  log "AWS emulator (moto: SQS, SES) on http://127.0.0.1:$port"
}

write_env() {
  local pg fs moto retry dlq changes changes_dlq sslmode
  sslmode="$(cat "$STATE/pg.sslmode" 2>/dev/null || echo disable)"
  pg="$(cat "$STATE/pg.port")"; fs="$(cat "$STATE/fakesnow.port")"; moto="$(cat "$STATE/moto.port")"
  retry="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["retry_queue_url"])' "$STATE/aws.json")"
  dlq="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dead_letter_queue_url"])' "$STATE/aws.json")"
  changes="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["changes_queue_url"])' "$STATE/aws.json")"
  changes_dlq="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["changes_dead_letter_queue_url"])' "$STATE/aws.json")"
  cat >"$ENV_FILE" <<ENV
# The local stack's environment: \`source $ENV_FILE\`
export COUNTRIES_STACK_DIR='$STATE'
# Postgres (psql reads the same variables)
export PGHOST=127.0.0.1 PGPORT=$pg PGDATABASE=countries PGUSER=countries PGPASSWORD=countries PGSSLMODE=$sslmode
export COUNTRIES_PG_ADMIN_USER=postgres COUNTRIES_PG_ADMIN_PASSWORD=postgres
# Snowflake: the protocol fake in front of the emulator (the account name is never contacted: SNOWFLAKE_ENDPOINT_URL redirects)
export SNOWFLAKE_ENDPOINT_URL=http://127.0.0.1:$fs SNOWFLAKE_ACCOUNT=fakesnow SNOWFLAKE_USER=replicator SNOWFLAKE_PASSWORD=local
export SNOWFLAKE_DATABASE=COUNTRIES SNOWFLAKE_SCHEMA=PUBLIC SNOWFLAKE_WAREHOUSE=LOCAL_WH SNOWFLAKE_ROLE=SYSADMIN
# AWS emulator
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
export RETRY_QUEUE_URL='$retry' DEAD_LETTER_QUEUE_URL='$dlq'
# Stream mode: the FIFO changes queue and its dead-letter queue
export CHANGES_QUEUE_URL='$changes' CHANGES_DEAD_LETTER_QUEUE_URL='$changes_dlq'
# The local changes queue's maxReceiveCount: the writer parks a batch that
# fails on that receive, with its error.
export CHANGES_MAX_RECEIVE_COUNT=$CHANGES_MAX_RECEIVES
# Retry path: a short backoff, so that a poison record reaches the dead-letter
# queue (after maxReceiveCount=5 receives) in seconds rather than minutes.
export RETRY_BACKOFF_BASE_SECONDS=1 RETRY_BACKOFF_MAX_SECONDS=2
export REPORT_SENDER=replication@example.com REPORT_RECIPIENTS=data-stakeholders@example.com
export LOG_FORMAT=\${LOG_FORMAT:-text}
ENV
}

is_running() {
  [ -f "$ENV_FILE" ] || return 1
  # A stack started by an older version lacks the changes queue: restart it.
  grep -q CHANGES_QUEUE_URL "$ENV_FILE" || return 1
  local pid
  for svc in fakesnow moto; do
    pid="$(cat "$STATE/$svc.pid" 2>/dev/null)" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
  done
  pg_run "$PG_BIN/pg_ctl" -D "$(cat "$STATE/pg.datadir")/data" status >/dev/null 2>&1
}

down() {
  for svc in fakesnow moto; do
    if [ -f "$STATE/$svc.pid" ]; then
      kill "$(cat "$STATE/$svc.pid")" 2>/dev/null || true
      rm -f "$STATE/$svc.pid"
    fi
  done
  if [ -f "$STATE/pg.datadir" ]; then
    local data
    data="$(cat "$STATE/pg.datadir")"
    pg_run "$PG_BIN/pg_ctl" -D "$data/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$data"
  fi
  rm -rf "$STATE"
}

# Whether $STATE is a stack this script made: its marker, or (a stack from
# before the marker) an environment file that names this very folder.
is_ours() {
  [ -f "$MARKER" ] && return 0
  [ -f "$ENV_FILE" ] && grep -qxF "export COUNTRIES_STACK_DIR='$STATE'" "$ENV_FILE"
}

# `down`, but only of a folder that is ours; a missing one is already down.
safe_down() {
  [ -e "$STATE" ] || return 0
  if ! is_ours; then
    die "refusing to delete $STATE: it is not a stack this script made (no $MARKER); remove it by hand if it is"
  fi
  down
}

print_endpoints() {
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  cat <<TXT
Local stack is up ($STATE).
  source $ENV_FILE
  Postgres   psql                       (host $PGHOST port $PGPORT, db $PGDATABASE, user $PGUSER)
  Snowflake  $SNOWFLAKE_ENDPOINT_URL   python: snowflake.connector.connect(host="127.0.0.1", port=${SNOWFLAKE_ENDPOINT_URL##*:}, protocol="http", account="fakesnow", user="x", password="x", database="COUNTRIES", schema="PUBLIC")
  SQS / SES  $AWS_ENDPOINT_URL   aws --endpoint-url \$AWS_ENDPOINT_URL sqs get-queue-attributes --queue-url \$RETRY_QUEUE_URL --attribute-names All
             retry queue $RETRY_QUEUE_URL
             dead-letter $DEAD_LETTER_QUEUE_URL
             changes     $CHANGES_QUEUE_URL (stream mode, FIFO)
             sent mail   curl -s \$AWS_ENDPOINT_URL/moto-api/data.json
TXT
}

case "$command" in
  up)
    if is_running; then
      log "already running"
      migrate_postgres "$(cat "$STATE/pg.port")"
    else
      safe_down
      mkdir -p "$STATE"
      echo "made by infra/local/stack.sh up; stack.sh down deletes this folder" > "$MARKER"
      # A stack that fails half-way must not leave servers behind. An EXIT
      # trap, not ERR: `die` exits, and ERR traps do not reach functions.
      starting=1
      trap 'status=$?; if [ "$starting" = 1 ]; then log "start-up failed; stopping what was started"; down; fi; exit $status' EXIT
      ensure_system_packages
      ensure_python_env
      start_postgres
      fail_point postgres
      start_fakesnow
      fail_point fakesnow
      start_moto
      write_env
      starting=0
    fi
    print_endpoints
    ;;
  down) safe_down; log "stopped" ;;
  status) if is_running; then print_endpoints; else echo "not running"; exit 1; fi ;;
  env) echo "$ENV_FILE" ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
