#!/usr/bin/env bash
# What each Lambda binary carries, checked on the built binaries (strings)
# and on the dependency graph (cargo tree):
# - no test or operator tooling: the fault injector, proptest, tokio's
#   test-util, the in-memory adapters (countries-shared's `testing`
#   feature), the operator crate;
# - only the adapters its function uses: the Snowflake client only in the
#   replicator and the publisher, SES only in the dlq-reporter.
# Each marker string is also looked for where it must be found (the test
# binary that carries the injector, the functions that use Snowflake or SES),
# so the check cannot pass by looking for the wrong string.
#
# Usage: check-lambda-binaries.sh [debug|release]   (default debug; `make
# bench` runs it on its release build, `make test` on the debug one)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PROFILE="${1:-debug}"
case "$PROFILE" in debug | release) ;; *) echo "usage: $0 [debug|release]" >&2; exit 2 ;; esac
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
INJECTOR="COUNTRIES_CRASH_AT"
# The login path of the Snowflake client (vendor/snowflake-api/src/session.rs).
SNOWFLAKE="/session/v1/login-request"
# The path of SES v2's SendEmail (aws-sdk-sesv2).
SES="/v2/email/outbound-emails"

fail() { echo "check-lambda-binaries: $*" >&2; exit 1; }
holds() { grep -q -a -F "$2" "$1"; }

control="$TARGET/replicate-once"
[ -x "$control" ] || fail "$control is missing: build the workspace first"
holds "$control" "$INJECTOR" || fail "control failed: replicate-once does not contain $INJECTOR"

for function in replicator retrier dlq-reporter publisher writer; do
  binary="$TARGET/$function"
  [ -x "$binary" ] || fail "$binary is missing: build the workspace ($PROFILE) first"
  holds "$binary" "$INJECTOR" && fail "$function contains the fault injector ($INJECTOR)"
  tree=$(cargo tree --locked -e normal -p "$function" --prefix none -f '{p} {f}')
  if grep -E '^(proptest|countries-tests|countries-cli|clap) ' <<<"$tree"; then
    fail "$function links test or operator crates (above)"
  fi
  if grep -E '^tokio .*test-util' <<<"$tree"; then
    fail "$function links tokio with test-util"
  fi
  if grep -E '^countries-shared .*testing' <<<"$tree"; then
    fail "$function links the in-memory adapters (countries-shared's testing feature)"
  fi
  case "$function" in replicator | publisher) wants_snowflake=1 ;; *) wants_snowflake=0 ;; esac
  case "$function" in dlq-reporter) wants_ses=1 ;; *) wants_ses=0 ;; esac
  for adapter in snowflake ses; do
    if [ "$adapter" = snowflake ]; then
      marker=$SNOWFLAKE crate=snowflake-api wants=$wants_snowflake
    else
      marker=$SES crate=aws-sdk-sesv2 wants=$wants_ses
    fi
    in_tree=0 in_binary=0
    grep -qE "^$crate " <<<"$tree" && in_tree=1
    holds "$binary" "$marker" && in_binary=1
    if [ "$wants" = 1 ]; then
      [ "$in_tree$in_binary" = 11 ] \
        || fail "control failed: $function uses $adapter but $crate (tree: $in_tree) or $marker (binary: $in_binary) is missing"
    else
      [ "$in_tree$in_binary" = 00 ] \
        || fail "$function carries $adapter, which it does not use ($crate in its tree: $in_tree, $marker in its binary: $in_binary)"
    fi
  done
  printf '%s (%s): no fault injector, no test or operator crates; Snowflake %s, SES %s\n' \
    "$function" "$PROFILE" "$([ $wants_snowflake = 1 ] && echo yes || echo no)" \
    "$([ $wants_ses = 1 ] && echo yes || echo no)"
done
