#!/usr/bin/env bash
# canopy's whole test suite: installs what is missing, starts PostgreSQL if needed, then
# runs rustfmt, clippy and every test (unit, property, end-to-end) on SQLite and PostgreSQL.
# Usage: tests/run.sh            (CI calls exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
need_pkg() { # need_pkg COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  say "installing $2 (for $1)"
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$2" >/dev/null
}

need_pkg openssl openssl
need_pkg curl curl
need_pkg sqlite3 sqlite3
need_pkg gcore gdb
need_pkg softhsm2-util softhsm2
command -v kubectl >/dev/null 2>&1 || { echo "kubectl is required (tests drive the test control plane with it); install it and re-run" >&2; exit 1; }
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
command -v go >/dev/null 2>&1 || { echo "go is required (Go's crypto/x509 checks certificates; the test control plane is built from Go modules): https://go.dev/dl" >&2; exit 1; }

# PostgreSQL: use the one on 127.0.0.1:5432 if it answers, else start or install one.
export CANOPY_TEST_POSTGRES_URL="${CANOPY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_up() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; }
if ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    need_pkg pg_ctlcluster postgresql
  fi
  # Debian's cluster asks for passwords on TCP (scram-sha-256); the test cluster trusts
  # loopback only, whether it was installed now or came with the machine.
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  done
  say "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

# The Go test tools build beside the Rust steps below: the first time it compiles
# kube-apiserver and etcd, cert-manager, istiod's CA and helm from their Go modules (about
# 10 minutes of one core), and it fills the cores that Rust's serial steps (the last
# crates, linking) and the first pass of tests leave idle. Then it takes seconds. Last,
# Go's crypto/x509 checker, as tests/support/src/x509check.rs builds it (the tests' own
# build then finds it in the Go build cache).
say "build the Go test tools (in the background)"
go_log=$(mktemp)
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
(
  for script in tests/cluster/build.sh tests/istiod/build.sh tests/helm/build.sh; do
    bash "$script" >/dev/null
  done
  cd tests/x509check && nice -n 10 go build -o "$target_dir/x509check/x509check" .
) >"$go_log" 2>&1 &
go_pid=$!

say "rustfmt"
cargo fmt --all -- --check

say "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "cargo deny (offline, RustSec snapshot from ../shared/advisory-db)"
tests/deny.sh

say "build the binaries and the tests"
cargo build --workspace --bins --tests --quiet
# Built: the tests need not each run `cargo build` again (one per process under nextest).
export CANOPY_TEST_BINS_BUILT=1

# Three tests per core: most of them wait on processes they started (kube-apiserver, etcd,
# cert-manager, PostgreSQL, openssl), not on the CPU. Measured on 2 cores, the end-to-end
# tests on the control planes: 131 s with 4 at a time, 84 s with 6, 89 s with 8.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$((3 * $(nproc)))}"
# The tests that start a Go test tool (a control plane, cert-manager, istiod's CA, helm),
# by module or name. The others run first, while the Go tools may still be building; these
# run once they are built. (A test missing from this list still passes: it waits for the
# build on the build script's lock.)
go_tests=(certmanager_branches:: certmanager_e2e:: certmanager_kubectl:: certmanager_leader:: istio_ chart_ name_constraints:: real_ walkthrough:: cert_manager)
skip_go=()
for t in "${go_tests[@]}"; do skip_go+=(--skip "$t"); done
failed=0

wait_for_go() {
  say "waiting for the Go test tools"
  if ! wait "$go_pid"; then
    cat "$go_log" >&2
    echo "building the Go test tools failed (log above)" >&2
    exit 1
  fi
  grep -h 'done in' "$go_log" || true
}

# Fuzzing needs nothing the tests need, and has a target folder of its own (fuzz/target),
# so it runs beside the second pass of tests, which leave part of the cores idle (they
# wait on the control planes they start), below the tests' priority.
start_fuzzing() {
  say "fuzz, in the background (coverage-guided, 10 s per target; FUZZ_SECONDS=600 tests/fuzz.sh for a long run)"
  fuzz_log=$(mktemp)
  # Its own target folder even if CARGO_TARGET_DIR is set: cargo locks a target folder
  # for as long as `cargo test` runs.
  CARGO_TARGET_DIR="$PWD/fuzz/target" nice -n 10 tests/fuzz.sh >"$fuzz_log" 2>&1 &
  fuzz_pid=$!
}
wait_for_fuzzing() {
  say "waiting for fuzzing"
  if ! wait "$fuzz_pid"; then
    failed=1
    echo "fuzzing failed (a crash's input is saved under fuzz/artifacts/TARGET/):" >&2
  fi
  cat "$fuzz_log"
}

if command -v cargo-nextest >/dev/null 2>&1; then
  # nextest runs every binary's tests in one pool: one pass, once the Go tools are built.
  wait_for_go
  start_fuzzing
  say "tests"
  cargo nextest run --workspace --no-fail-fast --failure-output final --test-threads "$RUST_TEST_THREADS" || failed=1
  wait_for_fuzzing
else
  say "tests that need no Go tool"
  cargo test --workspace --no-fail-fast -- "${skip_go[@]}" || failed=1
  wait_for_go
  start_fuzzing
  say "tests on the Go tools (control planes, cert-manager, istiod, helm)"
  cargo test --workspace --no-fail-fast -- "${go_tests[@]}" || failed=1
  wait_for_fuzzing
fi

if [ "$failed" != 0 ]; then
  say "failed (see the test output above)"
  exit 1
fi
say "done"
