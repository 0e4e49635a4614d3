#!/usr/bin/env bash
# Fuzzes retry-message parsing and row validation / the SQL literals of the
# Snowflake DELETE with cargo fuzz (libFuzzer), each target for a while.
#
#   infra/local/fuzz.sh [SECONDS_PER_TARGET]     (default 300; `make fuzz`)
#   FUZZ_TARGETS=retry_message infra/local/fuzz.sh 60   (one target)
#
# cargo-fuzz is installed into .local/tools on first use. The machine's only
# toolchain is stable: RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo fuzz
# passes. No sanitizer: the project has no unsafe code, and libFuzzer's
# coverage guidance is what finds panics; without ASan it runs ~3x faster.
# Findings land in fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SECONDS_PER_TARGET="${1:-300}"
TOOLS="${FUZZ_TOOLS:-$ROOT/.local/tools}"
if [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz into .local/tools (once)"
  cargo install --locked --quiet cargo-fuzz --version 0.13.2 --root "$TOOLS"
fi
export PATH="$TOOLS/bin:$PATH" RUSTC_BOOTSTRAP=1
cd "$ROOT/fuzz"
status=0
for target in ${FUZZ_TARGETS:-retry_message row_and_delete}; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${SECONDS_PER_TARGET}s"
  # -print_final_stats gives the executions; a crash exits non-zero and
  # leaves the input in artifacts/.
  # The run's own status, read straight after the pipeline (inside an
  # `if`, PIPESTATUS would be the `if`'s).
  set +e
  cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -max_len=4096 \
      2>&1 | tee "corpus/$target.log" | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==|SUMMARY|thread|panicked)"
  run_status=${PIPESTATUS[0]}
  set -e
  if [ "$run_status" != 0 ] || grep -q "panicked\|SUMMARY: libFuzzer" "corpus/$target.log"; then
    echo "fuzz: $target FOUND A CRASH (see fuzz/artifacts/$target and fuzz/corpus/$target.log)"
    status=1
  fi
done
exit $status
