#!/usr/bin/env bash
# Builds canopy-testcluster (embedded etcd + the real kube-apiserver, from Go modules)
# into $CARGO_TARGET_DIR/testcluster/canopy-testcluster (default: <repo>/target/...).
# The first build compiles Kubernetes and takes minutes; later runs use the Go build
# cache and finish in seconds. Prints the binary's path as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
out="$target/testcluster/canopy-testcluster"

if ! command -v go >/dev/null 2>&1; then
	echo "build.sh: 'go' is not installed or not on PATH; canopy-testcluster needs Go >= 1.26 (see tests/cluster/README.md)" >&2
	exit 1
fi

kube_version="$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$here/go.mod")" # e.g. v1.37.2
major="${kube_version#v}"; minor="${major#*.}"; major="${major%%.*}"; minor="${minor%%.*}"
# The version the apiserver reports (/version, kubectl version), as the release build sets it.
# Constant for a given go.mod, so it does not defeat the build cache.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "$(dirname "$out")"
# One build at a time (test processes, e.g. under nextest, each call this script).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$out.lock"
	flock 9
fi
echo "build.sh: building canopy-testcluster ($(go version | awk '{print $3}'), k8s.io/kubernetes $kube_version) -> $out" >&2
echo "build.sh: the first build compiles Kubernetes and takes several minutes; later builds are cached" >&2
cd "$here"
start=$(date +%s)
# -trimpath keeps the cache keys stable across checkouts; -s -w drops the symbol tables.
nice -n 10 go build -trimpath -ldflags="$ldflags" -o "$out" .
echo "build.sh: done in $(($(date +%s) - start))s ($(du -h "$out" | cut -f1))" >&2
echo "$out"
