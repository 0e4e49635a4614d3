#!/usr/bin/env bash
# Builds the five Lambda functions for arm64 (Graviton) as bootstrap zips:
#   target/lambda/{replicator,retrier,dlq-reporter,publisher,writer}/bootstrap.zip
# (a deployment in one Mode uploads only the functions it creates)
# with cargo-lambda and zig from PyPI (into .local/venv), cross-compiling from
# any Linux machine. OpenSSL is built from source for the target (a
# target-specific dependency of countries-shared), so no arm64 library is needed.
# `sam build` uses the same cargo-lambda (see the README).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
. "$ROOT/infra/deploy/python-env.sh"
ensure_requirements "$ROOT/infra/deploy/requirements.txt"
export PATH="$ROOT/.local/venv/bin:$PATH"

rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$' \
  || rustup target add aarch64-unknown-linux-gnu

# The mapping file of further tables, when there is one, goes into the
# packages beside the binary as `tables.toml` (set TablesFile=tables.toml):
# copied to the top of the workspace for the build, so that its path in the
# zip is its bare name, and removed after.
include=()
if [ -f infra/deploy/tables.toml ]; then
  [ ! -e tables.toml ] || { echo "tables.toml exists at the top of the workspace; move it to infra/deploy/" >&2; exit 1; }
  cp infra/deploy/tables.toml tables.toml
  trap 'rm -f "$ROOT/tables.toml"' EXIT
  include=(--include tables.toml)
fi
cargo lambda build --release --arm64 --output-format zip --locked "${include[@]}" \
  --package replicator --package retrier --package dlq-reporter --package publisher --package writer

for f in replicator retrier dlq-reporter publisher writer; do
  zip="target/lambda/$f/bootstrap.zip"
  [ -f "$zip" ] || { echo "missing $zip" >&2; exit 1; }
  printf '%-14s %s  %s bytes\n' "$f" "$zip" "$(stat -c %s "$zip")"
done
