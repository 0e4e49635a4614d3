#!/usr/bin/env bash
# `make bench`: the throughput and memory benchmark on a private local stack
# (see infra/local/bench.py for what is measured). Arguments go to bench.py:
#   infra/local/bench.sh --sizes 100000 --reps 3
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
STACK_DIR="$ROOT/.local/bench-stack"

infra/local/stack.sh down --dir "$STACK_DIR" >/dev/null 2>&1 || true
trap 'infra/local/stack.sh down --dir "$STACK_DIR" >/dev/null 2>&1 || true' EXIT
infra/local/stack.sh up --dir "$STACK_DIR" >/dev/null
# shellcheck disable=SC1091
. "$STACK_DIR/stack.env"
# shellcheck disable=SC1091
. "$ROOT/infra/deploy/python-env.sh"
ensure_requirements "$ROOT/infra/local/requirements-bench.txt"

echo "==> release build (the benchmark measures optimised code)"
cargo build --release --locked -p countries-cli -p countries-tests -p replicator -p retrier -p dlq-reporter \
  --bin countries --bin bench-write --bin replicator --bin retrier --bin dlq-reporter

echo "==> measuring"
"$ROOT/.local/venv/bin/python" "$ROOT/infra/local/bench.py" "$@"
