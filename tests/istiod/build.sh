#!/usr/bin/env bash
# Builds canopy-istiod-ca (istiod's own CA code, istio.io/istio/security/pkg/pki/ca) into
# $CARGO_TARGET_DIR/istiod/canopy-istiod-ca (default <repo>/target/...). The first build
# compiles Istio's CA packages and client-go (shared with tests/cluster through the Go build
# cache) and takes a few minutes; later runs are cached. Prints the binary's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
out="$target/istiod/canopy-istiod-ca"
command -v go >/dev/null 2>&1 || { echo "build.sh: 'go' is not on PATH; canopy-istiod-ca needs Go >= 1.26" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
if command -v flock >/dev/null 2>&1; then
	exec 9>"$out.lock"
	flock 9
fi
echo "build.sh: building canopy-istiod-ca (istio.io/istio $(awk '$1=="istio.io/istio"{print $2; exit}' "$here/go.mod")) -> $out" >&2
cd "$here"
# The shared build list of all Go test tools (tests/cluster/go.work).
export GOWORK="$root/tests/cluster/go.work"
start=$(date +%s)
nice -n 10 go build -trimpath -gcflags=all=-dwarf=false -ldflags="-s -w" -o "$out" .
echo "build.sh: done in $(($(date +%s) - start))s" >&2
echo "$out"
