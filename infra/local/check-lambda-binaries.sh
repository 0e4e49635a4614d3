#!/usr/bin/env bash
# No Lambda binary may carry test or operator tooling: the fault injector,
# proptest, tokio's test-util, or the operator crate. Checked on the built
# binaries (strings) and on the dependency graph (cargo tree), with the test
# binary that does carry the injector as the control, so the check cannot
# pass by looking in the wrong place.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
MARKER="COUNTRIES_CRASH_AT"

fail() { echo "check-lambda-binaries: $*" >&2; exit 1; }

[ -x "$TARGET/replicate-once" ] || fail "$TARGET/replicate-once is missing: build the workspace first"
grep -q -a "$MARKER" "$TARGET/replicate-once" \
  || fail "control failed: the test binary replicate-once does not contain $MARKER"

for function in replicator retrier dlq-reporter publisher writer; do
  binary="$TARGET/$function"
  [ -x "$binary" ] || fail "$binary is missing: build the workspace first"
  if grep -q -a "$MARKER" "$binary"; then
    fail "$function contains the fault injector ($MARKER)"
  fi
  tree=$(cargo tree --locked -e normal -p "$function" --prefix none -f '{p} {f}')
  if grep -E '^(proptest|countries-tests|countries-cli|clap) ' <<<"$tree"; then
    fail "$function links test or operator crates (above)"
  fi
  if grep -E '^tokio .*test-util' <<<"$tree"; then
    fail "$function links tokio with test-util"
  fi
  echo "$function: no fault injector, no test or operator crates"
done
