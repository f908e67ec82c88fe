#!/usr/bin/env bash
# The real `helm` CLI (Helm v4) for people checking the chart by hand: builds it from its Go
# module with tests/helm/build.sh (minutes the first time, cached after that), then runs
# `helm ARGS...` from the workspace root. The chart tests run the same binary directly
# (tests/chart/helm.rs). For example:
#   tests/chart/render.sh lint charts/canopy-issuer --strict [-f VALUES]...
#   tests/chart/render.sh template canopy charts/canopy-issuer --namespace canopy [-f VALUES]... [--include-crds]
#   tests/chart/render.sh install canopy charts/canopy-issuer --namespace canopy --dry-run=client [-f VALUES]...   # prints NOTES too
#   tests/chart/render.sh version
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
helm="$(bash "$root/tests/helm/build.sh" | tail -n 1)"
cd "$root"
exec "$helm" "$@"
