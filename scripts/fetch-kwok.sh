#!/usr/bin/env bash
# Installs kwok (sigs.k8s.io/kwok, "Kubernetes WithOut Kubelet") from the Go
# module proxy, for the scale benchmark (`cargo bench -p openmodel-operator
# --bench scale`): kwok plays the kubelet of many simulated nodes against the
# test control plane.
#
# The binary lands in the per-user cache (scripts/cache-env.sh), in
# $OPENMODEL_CACHE/kwok/<version>/bin, and .cache/kwok/bin in the clone is a
# link to it. Go's module and build caches are in $OPENMODEL_CACHE/go, as for
# scripts/build-control-plane.sh.
#
# Idempotent: when that folder holds kwok of the wanted version, it only
# refreshes the link. It is built in a temporary folder and renamed into
# place, so an interrupted build leaves nothing that looks complete.
#
# Environment:
#   KWOK_VERSION            the kwok release, default v0.7.0
#   OPENMODEL_CACHE         the per-user cache (default ~/.cache/openmodel)
#   OPENMODEL_GO_PARALLEL   packages built in parallel (go build -p), default 2
#   GOPROXY                 as usual for go; the default is the public proxy
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version="${KWOK_VERSION:-v0.7.0}"
link="$root/.cache/kwok/bin"
parallel="${OPENMODEL_GO_PARALLEL:-2}"

command -v go >/dev/null 2>&1 || {
  echo "fetch-kwok: 'go' is missing; install Go 1.23 or newer (e.g. from go.dev/dl or apt-get install golang-go)." >&2
  exit 1
}

# shellcheck source=scripts/go-env.sh
. scripts/go-env.sh
dest="$OPENMODEL_CACHE/kwok/$version"
bin_dir="$dest/bin"

# `kwok --version` prints "kwok version v0.7.0 go1.x (os/arch)".
kwok_version() { "$1" --version 2>/dev/null | awk '{print $3}'; }
if [ -x "$bin_dir/kwok" ] && [ "$(kwok_version "$bin_dir/kwok")" = "$version" ]; then
  cache_link "$link" "$bin_dir"
  echo "fetch-kwok: kwok $version is up to date in $bin_dir (linked from .cache/kwok/bin)"
  exit 0
fi

tmp=$(cache_tmp "$dest")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

# kwok reports its version from sigs.k8s.io/kwok/pkg/consts.Version, which
# its own Makefile sets with -X (the source holds a placeholder without the
# leading v); so do we, for the check above.
started=$(date +%s)
GOBIN="$tmp/bin" go install -p "$parallel" -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$version" \
  "sigs.k8s.io/kwok/cmd/kwok@$version"
[ "$(kwok_version "$tmp/bin/kwok")" = "$version" ] || {
  echo "fetch-kwok: the kwok just built does not report $version" >&2
  exit 1
}
cache_commit "$tmp" "$dest"
trap - EXIT
cache_link "$link" "$bin_dir"
echo "fetch-kwok: kwok $version built in $(($(date +%s) - started)) s into $bin_dir (linked from .cache/kwok/bin)"
