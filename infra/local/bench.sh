#!/usr/bin/env bash
# `make bench`: the throughput and memory benchmark on a private local stack
# (see infra/local/bench.py for what is measured), the mapped table's
# (infra/local/bench_tables.py), then stream mode's freshness and scale
# figures (infra/local/bench_stream.py). Arguments go to bench.py, except:
#   --stream-only        only the stream figures
#   --tables-only        only the mapped table's figures
#   --no-stream          no stream figures
#   --tables-args "..."  arguments for bench_tables.py (e.g. "--rows 100000")
#   --stream-args "..."  arguments for bench_stream.py (e.g. "--seconds 30")
#   infra/local/bench.sh --sizes 100000 --reps 3
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
STACK_DIR="$ROOT/.local/bench-stack"
batch=1 tables=1 stream=1 stream_args=() tables_args=() args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stream-only) batch=0 tables=0 ;;
    --tables-only) batch=0 stream=0 ;;
    --no-stream) stream=0 ;;
    --tables-args) shift; read -r -a tables_args <<<"${1:-}" ;;
    --stream-args) shift; read -r -a stream_args <<<"${1:-}" ;;
    *) args+=("$1") ;;
  esac
  shift
done

echo "==> release build (the benchmark measures optimised code)"
cargo build --release --locked -p countries-cli -p countries-tests -p replicator -p retrier -p dlq-reporter \
  -p publisher -p writer --bin countries --bin bench-write --bin bench-table --bin replicate-once --bin replicator --bin retrier \
  --bin dlq-reporter --bin publisher --bin writer
# What each release binary links: the Snowflake client only in the
# replicator and the publisher, SES only in the dlq-reporter.
infra/local/check-lambda-binaries.sh release

infra/local/stack.sh down --dir "$STACK_DIR" >/dev/null 2>&1 || true
trap 'infra/local/stack.sh down --dir "$STACK_DIR" >/dev/null 2>&1 || true' EXIT
# Postgres with TLS, as deployed: the COPY line, the run and the stream
# writers all pay the handshake and the encryption.
COUNTRIES_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/countries" \
  infra/local/stack.sh up --dir "$STACK_DIR" --tls >/dev/null
# shellcheck disable=SC1091
. "$STACK_DIR/stack.env"
# Both scripts' figures name this run, so that the stream writer is compared
# with the COPY line of the same run.
BENCH_RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-$$"
export BENCH_RUN_ID
# shellcheck disable=SC1091
. "$ROOT/infra/deploy/python-env.sh"
ensure_requirements "$ROOT/infra/local/requirements-bench.txt"


if [ "$batch" = 1 ]; then
  echo "==> measuring"
  "$ROOT/.local/venv/bin/python" "$ROOT/infra/local/bench.py" "${args[@]}"
fi
if [ "$tables" = 1 ]; then
  echo "==> a mapped table (eleven columns)"
  "$ROOT/.local/venv/bin/python" "$ROOT/infra/local/bench_tables.py" "${tables_args[@]}"
fi
if [ "$stream" = 1 ]; then
  echo "==> stream mode"
  "$ROOT/.local/venv/bin/python" "$ROOT/infra/local/bench_stream.py" "${stream_args[@]}"
fi
