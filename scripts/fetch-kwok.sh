#!/usr/bin/env bash
# Installs kwok (sigs.k8s.io/kwok, "Kubernetes WithOut Kubelet") from the Go
# module proxy into .cache/kwok/bin/, for the scale benchmark
# (`cargo bench -p openmodel-operator --bench scale`): kwok plays the kubelet
# of many simulated nodes against the test control plane. Go's module and
# build caches stay in .cache/go/, as for scripts/build-control-plane.sh;
# both folders are ignored by git.
#
# Idempotent: does nothing when .cache/kwok/bin/kwok is already the wanted
# version.
#
# Environment:
#   KWOK_VERSION            the kwok release, default v0.7.0
#   OPENMODEL_GO_PARALLEL   packages built in parallel (go build -p), default 2
#   GOPROXY                 as usual for go; the default is the public proxy
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version="${KWOK_VERSION:-v0.7.0}"
bin_dir="$root/.cache/kwok/bin"
parallel="${OPENMODEL_GO_PARALLEL:-2}"

command -v go >/dev/null 2>&1 || {
  echo "fetch-kwok: 'go' is missing; install Go 1.23 or newer (e.g. from go.dev/dl or apt-get install golang-go)." >&2
  exit 1
}

# `kwok --version` prints "kwok version v0.7.0 go1.x (os/arch)".
if [ -x "$bin_dir/kwok" ] && [ "$("$bin_dir/kwok" --version 2>/dev/null | awk '{print $3}')" = "$version" ]; then
  echo "fetch-kwok: kwok $version is up to date in .cache/kwok/bin"
  exit 0
fi

. scripts/go-env.sh
export GOBIN="$bin_dir"
mkdir -p "$bin_dir"

# kwok reports its version from sigs.k8s.io/kwok/pkg/consts.Version, which
# its own Makefile sets with -X (the source holds a placeholder without the
# leading v); so do we, for the check above.
started=$(date +%s)
go install -p "$parallel" -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$version" \
  "sigs.k8s.io/kwok/cmd/kwok@$version"
echo "fetch-kwok: kwok $version built in $(( $(date +%s) - started )) s into .cache/kwok/bin"
