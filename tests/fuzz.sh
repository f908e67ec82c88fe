#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer) of every parser in the core library that
# outside input reaches. Short runs here; a longer run: FUZZ_SECONDS=600 tests/fuzz.sh
# The short run builds the targets unoptimised (`--dev`: about 2.5 minutes from nothing
# instead of 6, with debug assertions and overflow checks on; ~36,000 runs/s on the CSR
# parser); a run longer than a minute builds them optimised, where the runs per second
# matter more than the build.
# A crash stops the run with the input saved under fuzz/artifacts/TARGET/; turn it into a
# regression test beside the parser before fixing it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-10}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked --quiet cargo-fuzz
# The machine's toolchain is stable: RUSTC_BOOTSTRAP lets cargo-fuzz pass its -Z flags.
# Safe Rust needs no AddressSanitizer (unsafe code is forbidden); libFuzzer's coverage
# instrumentation and panics-as-crashes are what find bugs here.
export RUSTC_BOOTSTRAP=1
profile=--dev
[ "$seconds" -gt 60 ] && profile=--release
export profile
cargo fuzz build -s none "$profile"
targets=$(cargo fuzz list)
# One target per core at a time (libFuzzer runs on one thread); each prints one line.
# A crash or a panic fails the run (cargo fuzz exits non-zero; the input is saved under
# fuzz/artifacts/TARGET/), and so does the whole script (xargs exits non-zero).
fuzz_one() {
  local t=$1 out status
  mkdir -p "corpus/$t"
  out=$(cargo fuzz run -s none "$profile" "$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 2>&1)
  status=$?
  printf '%-16s %s\n' "$t" "$(grep -E '^stat::number_of_executed_units|^==|panicked|SUMMARY|ERROR' <<<"$out" \
    | sed 's/stat::number_of_executed_units: */runs: /' | tr '\n' ' ')"
  return "$status"
}
export -f fuzz_one
export seconds
# The jwt target keeps its SQLite file in the temp folder: one of this run's own, removed
# at the end.
TMPDIR=$(mktemp -d)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
printf '%s\n' $targets | xargs -P "$(nproc)" -I{} bash -c 'fuzz_one "$1"' _ {}
