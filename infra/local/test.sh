#!/usr/bin/env bash
# Every check and test, against a private copy of the local stack that is
# started here and stopped on exit: formatting, clippy, unit tests,
# integration tests of each adapter and the end-to-end tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
STACK_DIR="$ROOT/.local/test-stack"

step() { printf '\n==> %s\n' "$*"; }

step "formatting"
cargo fmt --all -- --check

step "template (cfn-lint)"
infra/deploy/lint.sh

step "local stack (Postgres 15, fakesnow, moto)"
infra/local/stack.sh down --dir "$STACK_DIR" >/dev/null 2>&1 || true
trap 'infra/local/stack.sh down --dir "$STACK_DIR" >/dev/null 2>&1 || true' EXIT
infra/local/stack.sh up --dir "$STACK_DIR" >/dev/null
# shellcheck disable=SC1091
. "$STACK_DIR/stack.env"
# The Lambda runtime API emulator for tests/runtime_api.rs (cargo lambda).
# shellcheck disable=SC1091
. infra/deploy/python-env.sh
ensure_requirements infra/local/requirements-runtime.txt

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
# The tests run the Lambda and CLI binaries; `cargo test` alone builds them
# only as test harnesses.
cargo build --workspace --bins --locked

step "no test or operator tooling in the Lambda binaries"
infra/local/check-lambda-binaries.sh

step "release profile: a panic in the retrier is contained"
# The deployed binaries are release builds: this is the profile they use.
probe=$(cargo run --quiet --release --locked -p retrier --example panic_probe 2>/dev/null) || {
  echo "the panic probe did not finish: the release profile aborts on panic" >&2
  exit 1
}
echo "$probe"
grep -qx "contained: listed m1,m2" <<<"$probe"

step "tests"
# One closing line sums every cargo test binary's result (cargo's own last
# line is the doc tests' `0 passed`, which reads as if nothing ran).
LOG="$(mktemp)"
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
summary=$(awk '/^test result:/ {p += $4; f += $6} END {printf "%d passed, %d failed", p, f}' "$LOG")
rm -f "$LOG"
printf '\n%s\n' "$summary"
exit "$status"
