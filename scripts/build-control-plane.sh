#!/usr/bin/env bash
# Builds the real Kubernetes the integration tests run against, from the Go
# module in tools/k8s/ (Go module proxy only; no container images, no release
# tarballs): etcd, kube-apiserver and kubectl for the control-plane tests, and
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy for the
# single-node cluster (scripts/cluster.sh), and CoreDNS.
#
# The binaries land in the per-user cache (scripts/cache-env.sh), in
# $OPENMODEL_CACHE/k8s/<key>/bin, where <key> is a hash of tools/k8s/go.mod
# and go.sum, the versions, the Go version and the build flags (the stamp
# .stamp beside the binaries holds the whole hash); .cache/k8s/bin in the
# clone is a link to that folder. Go's module and build caches are in
# $OPENMODEL_CACHE/go, shared by all clones.
#
# Idempotent: when that folder exists (it is built in a temporary folder and
# renamed into place, so it is complete) and its stamp matches, it only
# refreshes the link: seconds on a machine that built it before, from any
# clone. Any change of the inputs builds a new folder under a new key.
#
# Environment:
#   OPENMODEL_CACHE        the per-user cache (default ~/.cache/openmodel)
#   OPENMODEL_GO_PARALLEL  packages built in parallel (go build -p), default 2
#   GOPROXY                as usual for go; the default is the public proxy
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mod_dir="$root/tools/k8s"
link="$root/.cache/k8s/bin"
parallel="${OPENMODEL_GO_PARALLEL:-2}"

command -v go >/dev/null 2>&1 || {
  echo "build-control-plane: 'go' is missing; install Go $(awk '/^go /{print $2}' "$mod_dir/go.mod") or newer (e.g. from go.dev/dl or apt-get install golang-go)." >&2
  exit 1
}

# shellcheck source=scripts/go-env.sh
. scripts/go-env.sh
GOFLAGS+=" -mod=readonly"

# The versions come from go.mod, so that the version the binaries report is
# always the version they were built from.
mod_version() {
  local v
  v=$(awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$mod_dir/go.mod")
  [ -n "$v" ] || { echo "build-control-plane: $1 is not required in tools/k8s/go.mod" >&2; exit 1; }
  echo "$v"
}
k8s_version=$(mod_version k8s.io/kubernetes)
# The cluster DNS of scripts/cluster.sh; its module has no replace
# directives, so `go install module@version` builds it.
coredns_version=v1.14.7
etcd_version=$(mod_version go.etcd.io/etcd/server/v3)
k8s_major=$(echo "$k8s_version" | sed -E 's/^v([0-9]+)\.([0-9]+)\..*/\1/')
k8s_minor=$(echo "$k8s_version" | sed -E 's/^v([0-9]+)\.([0-9]+)\..*/\2/')

# kubectl reports its client version from k8s.io/component-base/version and
# client-go keeps a copy in k8s.io/client-go/pkg/version (used in the
# User-Agent); Kubernetes' own hack/lib/version.sh sets both, and so do we.
# kube-apiserver serves /version from component-base.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$k8s_major -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done

wanted_stamp=$(
  {
    echo "kubernetes $k8s_version etcd $etcd_version coredns $coredns_version"
    go version
    echo "flags -trimpath CGO_ENABLED=$CGO_ENABLED GOFLAGS=$GOFLAGS ldflags $ldflags"
    cat "$mod_dir/go.mod" "$mod_dir/go.sum"
  } | sha256sum | cut -d' ' -f1
)

key=${wanted_stamp:0:16}
dest="$OPENMODEL_CACHE/k8s/$key"
bin_dir="$dest/bin"
stamp="$bin_dir/.stamp"

commands="kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy"
all_present() { # all_present <folder>
  local name
  for name in etcd coredns $commands; do [ -x "$1/$name" ] || return 1; done
}
if all_present "$bin_dir" && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted_stamp" ]; then
  cache_link "$link" "$bin_dir"
  echo "build-control-plane: up to date in .cache/k8s/bin -> $bin_dir (kubernetes $k8s_version, etcd $etcd_version)"
  exit 0
fi

echo "build-control-plane: building kubernetes $k8s_version ($commands) and etcd $etcd_version into $bin_dir"
echo "build-control-plane: $(go version); go build -p $parallel; Go's caches in $OPENMODEL_CACHE/go"
# Built in a temporary folder beside the final one and renamed into place
# when everything is built, so that the final folder is always complete.
tmp=$(cache_tmp "$dest")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

build() { # build <output name> <package> [ldflags]
  local name=$1 pkg=$2 flags=${3:-"-s -w"} start
  start=$(date +%s)
  echo "+ (cd tools/k8s && go build -p $parallel -trimpath -ldflags \"$flags\" -o $tmp/bin/$name $pkg)"
  (cd "$mod_dir" && go build -p "$parallel" -trimpath -ldflags "$flags" -o "$tmp/bin/$name" "$pkg")
  echo "build-control-plane: $name built in $(($(date +%s) - start)) s"
}

build etcd go.etcd.io/etcd/server/v3
for name in $commands; do
  build "$name" "k8s.io/kubernetes/cmd/$name" "$ldflags"
done
start=$(date +%s)
echo "+ GOBIN=$tmp/bin go install -trimpath -ldflags \"-s -w\" github.com/coredns/coredns@$coredns_version"
GOBIN="$tmp/bin" GOFLAGS="-modcacherw -buildvcs=false" go install -p "$parallel" -trimpath -ldflags "-s -w" \
  "github.com/coredns/coredns@$coredns_version"
echo "build-control-plane: coredns built in $(($(date +%s) - start)) s"
all_present "$tmp/bin" || { echo "build-control-plane: a binary is missing in $tmp/bin after the build" >&2; exit 1; }

echo "build-control-plane: built versions:"
"$tmp/bin/etcd" --version | sed 's/^/  /'
"$tmp/bin/kube-apiserver" --version | sed 's/^/  /'
"$tmp/bin/kubectl" version --client | sed 's/^/  /'
for name in kube-controller-manager kube-scheduler kubelet kube-proxy; do
  "$tmp/bin/$name" --version | sed 's/^/  /'
done
# The first line only, taken after coredns has finished writing (piping it
# into a reader that stops after one line can kill it with SIGPIPE under
# pipefail).
coredns_banner=$("$tmp/bin/coredns" -version)
echo "  ${coredns_banner%%$'\n'*}"
echo "$wanted_stamp" >"$tmp/bin/.stamp"
cache_commit "$tmp" "$dest"
trap - EXIT
cache_link "$link" "$bin_dir"
echo "build-control-plane: done; binaries in $bin_dir (linked from .cache/k8s/bin)"
