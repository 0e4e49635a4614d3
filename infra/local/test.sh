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

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
# The tests run the Lambda and CLI binaries; `cargo test` alone builds them
# only as test harnesses.
cargo build --workspace --bins --locked

step "tests"
cargo test --workspace --locked
