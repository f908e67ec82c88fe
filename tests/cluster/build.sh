#!/usr/bin/env bash
# Builds canopy's test control plane binaries from Go modules into
# $CARGO_TARGET_DIR/testcluster/ (default: <repo>/target/testcluster/):
#   canopy-testcluster  embedded etcd + the real kube-apiserver (this module, .)
#   canopy-certmanager  the real cert-manager controller and webhook (./certmanager)
# Usage: build.sh [canopy-testcluster|canopy-certmanager]...   (default: both)
# Both are built in the workspace of go.work, so they share one set of dependency versions
# and the compiled packages in the Go build cache. The first build compiles Kubernetes and
# cert-manager and takes minutes; later runs use the Go build cache and finish in seconds.
# Prints the path of each binary built, one a line, canopy-testcluster last by default.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
outdir="$target/testcluster"

bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
	bins=(canopy-certmanager canopy-testcluster)
fi
for b in "${bins[@]}"; do
	case "$b" in
	canopy-testcluster | canopy-certmanager) ;;
	*)
		echo "build.sh: unknown binary '$b' (canopy-testcluster or canopy-certmanager)" >&2
		exit 2
		;;
	esac
done

if ! command -v go >/dev/null 2>&1; then
	echo "build.sh: 'go' is not installed or not on PATH; canopy-testcluster needs Go >= 1.26 (see tests/cluster/README.md)" >&2
	exit 1
fi

cd "$here"
export GOWORK="$here/go.work"
kube_version="$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$here/go.mod")" # e.g. v1.37.2
major="${kube_version#v}"; minor="${major#*.}"; major="${major%%.*}"; minor="${minor%%.*}"
# No DWARF: compiled without it (-gcflags=all=-dwarf=false, 15 % less compile time; every
# Go test tool's build.sh passes the same flags, so the build cache is shared) and linked
# without it (-s -w). Stack traces still name functions and lines.
#
# The version the apiserver reports (/version, kubectl version), as the release build sets it.
# Constant for a given go.mod, so it does not defeat the build cache.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "$outdir"
# One build at a time (test processes, e.g. under nextest, each call this script).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$outdir/canopy-testcluster.lock"
	flock 9
fi

built=()
for b in "${bins[@]}"; do
	out="$outdir/$b"
	start=$(date +%s)
	case "$b" in
	canopy-testcluster)
		echo "build.sh: building canopy-testcluster ($(go version | awk '{print $3}'), k8s.io/kubernetes $kube_version) -> $out" >&2
		echo "build.sh: the first build compiles Kubernetes and takes several minutes; later builds are cached" >&2
		# -trimpath keeps the cache keys stable across checkouts; -s -w drops the symbol tables.
		nice -n 10 go build -trimpath -gcflags=all=-dwarf=false -ldflags="$ldflags" -o "$out" .
		;;
	canopy-certmanager)
		# The CRDs are read at run time from the cert-manager module in the module cache
		# (crds subcommand): its folder is linked in (a link-time constant, cache-friendly).
		cm_dir="$(go mod download -json github.com/cert-manager/cert-manager | awk -F'"' '$2=="Dir"{print $4}')"
		cm_version="$(go list -m -f '{{.Version}}' github.com/cert-manager/cert-manager)"
		if [ -z "$cm_dir" ] || [ ! -d "$cm_dir/deploy/crds" ]; then
			echo "build.sh: cannot find the cert-manager module's deploy/crds (got '$cm_dir')" >&2
			exit 1
		fi
		echo "build.sh: building canopy-certmanager (cert-manager $cm_version, k8s.io/client-go $(go list -m -f '{{.Version}}' k8s.io/client-go)) -> $out" >&2
		echo "build.sh: the first build compiles cert-manager (and Kubernetes, if not cached) and takes minutes" >&2
		nice -n 10 go build -trimpath -gcflags=all=-dwarf=false -ldflags="$ldflags -X main.certManagerDir=$cm_dir" -o "$out" ./certmanager
		;;
	esac
	echo "build.sh: $b done in $(($(date +%s) - start))s ($(du -h "$out" | cut -f1))" >&2
	built+=("$out")
done
printf '%s\n' "${built[@]}"
