#!/usr/bin/env bash
# Builds the real `helm` CLI from its Go module (helm.sh/helm/v4, pinned in go.mod; main.go
# is helm's own cmd/helm/helm.go) into $CARGO_TARGET_DIR/helm/helm (default
# <repo>/target/helm/helm), stamped with its version as helm's release build does.
# The first build compiles Helm and client-go and takes minutes; later runs find the binary
# up to date (a stamp of every input) and take milliseconds, or rebuild from the Go build
# cache in seconds. Prints the binary's path as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
out="$target/helm/helm"

if ! command -v go >/dev/null 2>&1; then
	echo "build.sh: 'go' is not installed or not on PATH; helm needs Go >= 1.26 (https://go.dev/dl)" >&2
	exit 1
fi

helm_version="$(awk '$1=="helm.sh/helm/v4"{print $2; exit}' "$here/go.mod")" # e.g. v4.3.2
if [ -z "$helm_version" ]; then
	echo "build.sh: no helm.sh/helm/v4 requirement in $here/go.mod" >&2
	exit 1
fi
# What helm's Makefile stamps into a release (internal/version): the tag, no "+unreleased"
# metadata, a clean tree. The module zip has no git commit, so GitCommit stays empty.
# Link-time only: the compiled packages, and so the build cache, do not depend on it.
pkg=helm.sh/helm/v4/internal/version
ldflags="-s -w -X $pkg.version=$helm_version -X $pkg.metadata= -X $pkg.gitTreeState=clean"

# The Go build cache serves a package to two builds only when its module and every module
# under it resolve to the same versions in both. tests/cluster builds its binaries in the
# workspace of tests/cluster/go.work: once that workspace also uses this module (../helm),
# helm is built in it too, with the same build list, and client-go, apimachinery, api...
# are compiled once for all of them. Until then this module is built on its own (GOWORK=off).
work="$root/tests/cluster/go.work"
work_dirs() { go work edit -json "$work" 2>/dev/null | sed -n 's/.*"DiskPath": "\(.*\)".*/\1/p'; }
export GOWORK=off
if [ -f "$work" ] && work_dirs | grep -Eqx '(\.\./helm|\.\./\.\./tests/helm)/?'; then
	export GOWORK="$work"
fi

# Everything the binary is made of (the modules themselves are fixed by go.sum).
inputs() {
	echo "$ldflags"
	go version
	go env GOOS GOARCH GOAMD64 GOEXPERIMENT GOFLAGS CGO_ENABLED CC
	echo "GOWORK=$GOWORK"
	cat "$here/go.mod" "$here/go.sum" "$here"/*.go "$here/build.sh"
	if [ "$GOWORK" != off ]; then
		cat "$GOWORK" "$GOWORK.sum" 2>/dev/null || true
		for d in $(work_dirs); do
			cat "$(dirname "$GOWORK")/$d/go.mod" "$(dirname "$GOWORK")/$d/go.sum" 2>/dev/null || true
		done
	fi
}
stamp="$(inputs | sha256sum | cut -d' ' -f1)"

mkdir -p "$(dirname "$out")"
# One build at a time (test processes, e.g. under nextest, each call this script).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$out.lock"
	flock 9
fi
if [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
	echo "build.sh: helm $helm_version is up to date: $out" >&2
	echo "$out"
	exit 0
fi
echo "build.sh: building helm $helm_version ($(go version | awk '{print $3}'), helm.sh/helm/v4 from the Go module proxy, GOWORK=$GOWORK) -> $out" >&2
echo "build.sh: the first build compiles Helm and client-go and takes several minutes; later builds are cached" >&2
cd "$here"
start=$(date +%s)
# The same flags as tests/cluster/build.sh (-trimpath; cgo as the environment sets it, not
# helm's CGO_ENABLED=0), so that packages both use can share build cache entries.
nice -n 10 go build -trimpath -gcflags=all=-dwarf=false -ldflags="$ldflags" -o "$out.tmp" .
# A rename, so that helm processes already running (other tests) keep their file.
mv -f "$out.tmp" "$out"
echo "$stamp" >"$out.stamp"
echo "build.sh: done in $(($(date +%s) - start))s ($(du -h "$out" | cut -f1))" >&2

# Name the modules both build lists have at different versions (see GOWORK above).
if [ "$GOWORK" = off ] && [ -f "$root/tests/cluster/go.mod" ]; then
	mods() { (cd "$1" && go list -m -f '{{.Path}} {{.Version}}' all 2>/dev/null) | sort || true; }
	differ="$(join <(mods "$here") <(unset GOWORK; mods "$root/tests/cluster") |
		awk '$2 != $3 {n++; s = s sprintf(" %s (%s here, %s there)", $1, $2, $3)} END {if (n) printf "%d modules:%s", n, s}')" || true
	if [ -n "$differ" ]; then
		echo "build.sh: note: the Go build cache compiles the k8s.io packages for helm and for tests/cluster separately, as their build lists differ in $differ; adding ../helm to the use block of tests/cluster/go.work gives them one" >&2
	fi
fi
echo "$out"
