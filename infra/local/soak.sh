#!/usr/bin/env bash
# The long reliability run: many random fault schedules against the real
# processes and services, and many property-test cases.
#
#   infra/local/soak.sh                    (`make soak`)
#   SCHEDULES=500 SEED=42 CASES=100000 infra/local/soak.sh
#
# SCHEDULES  fault schedules to run, `case` and the mapped `orders` table in each (default 700;
#            `make test` runs one per named fault, 45; the first 90 put each in both tables' runs)
# STREAM_SCHEDULES  stream mode's fault schedules (default 300; `make test` runs 42)
# SEED       their seed (default: the time; printed, so a failure replays)
# PARALLEL   schedules at once (default 2)
# CASES      property-test cases (default 100000; `make test` runs 256)
#
# Figures go to bench/soak-latest.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
STACK_DIR="$ROOT/.local/soak-stack"
SCHEDULES="${SCHEDULES:-700}"
SEED="${SEED:-$(date +%s)}"
PARALLEL="${PARALLEL:-2}"
CASES="${CASES:-100000}"
STREAM_SCHEDULES="${STREAM_SCHEDULES:-300}"

infra/local/stack.sh down --dir "$STACK_DIR" >/dev/null 2>&1 || true
trap 'infra/local/stack.sh down --dir "$STACK_DIR" >/dev/null 2>&1 || true' EXIT
infra/local/stack.sh up --dir "$STACK_DIR" >/dev/null
# shellcheck disable=SC1091
. "$STACK_DIR/stack.env"

mkdir -p bench
# The stream schedules run the `countries` and `replicate-once` binaries:
# `cargo test` alone builds them only as test harnesses.
cargo build --locked --workspace --bins
started=$(date +%s)
echo "soak: property tests, $CASES cases each"
PROPTEST_CASES="$CASES" cargo test --locked -p countries-shared --lib -- properties checks 2>&1 | grep -E "^test |test result"
prop_seconds=$(( $(date +%s) - started ))

echo "soak: $SCHEDULES fault schedules, seed $SEED, $PARALLEL at a time"
FAULT_SCHEDULES="$SCHEDULES" FAULT_SEED="$SEED" FAULT_PARALLEL="$PARALLEL" \
  FAULT_REPORT="$ROOT/bench/soak-schedules.json" \
  cargo test --locked -p countries-tests --test fault_schedules -- --nocapture 2>&1 \
  | grep -vE "^seed .*lost=0$" | grep -vE "^\s*$"

echo "soak: $STREAM_SCHEDULES stream-mode fault schedules, seed $SEED, $PARALLEL at a time"
STREAM_FAULT_SCHEDULES="$STREAM_SCHEDULES" FAULT_SEED="$SEED" FAULT_PARALLEL="$PARALLEL" \
  FAULT_REPORT="$ROOT/bench/soak-schedules.json" \
  cargo test --locked -p countries-tests --test stream_fault_schedules -- --nocapture 2>&1 \
  | grep -vE "^seed .*lost=0$" | grep -vE "^\s*$"

python3 - "$ROOT/bench/soak-schedules.json" "$CASES" "$prop_seconds" > bench/soak-latest.json <<'PY'
import json, sys
schedules = json.load(open(sys.argv[1]))
stream = json.load(open(sys.argv[1] + ".stream.json"))
print(json.dumps({"fault_schedules": schedules,
                  "stream_fault_schedules": stream,
                  "property_cases_per_test": int(sys.argv[2]),
                  "property_seconds": int(sys.argv[3])}, indent=2))
PY
rm -f bench/soak-schedules.json bench/soak-schedules.json.stream.json
echo "soak: figures in bench/soak-latest.json"
