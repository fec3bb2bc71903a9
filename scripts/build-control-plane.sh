#!/usr/bin/env bash
# Builds the real Kubernetes the integration tests run against, from the Go
# module in tools/k8s/ (Go module proxy only; no container images, no release
# tarballs): etcd, kube-apiserver and kubectl for the control-plane tests, and
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy for the
# single-node cluster (scripts/cluster.sh). The binaries land in
# .cache/k8s/bin/ and Go's module and build caches in .cache/go/, both ignored
# by git.
#
# Idempotent: when the binaries are present and were built from the
# same tools/k8s/go.mod and go.sum, this script, the same Go and the same
# ldflags (recorded in .cache/k8s/bin/.stamp), it does nothing. Any change
# rebuilds them all.
#
# Environment:
#   OPENMODEL_GO_PARALLEL  packages built in parallel (go build -p), default 2
#   GOPROXY                as usual for go; the default is the public proxy
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mod_dir="$root/tools/k8s"
bin_dir="$root/.cache/k8s/bin"
stamp="$bin_dir/.stamp"
parallel="${OPENMODEL_GO_PARALLEL:-2}"

command -v go >/dev/null 2>&1 || {
  echo "build-control-plane: 'go' is missing; install Go $(awk '/^go /{print $2}' "$mod_dir/go.mod") or newer (e.g. from go.dev/dl or apt-get install golang-go)." >&2
  exit 1
}

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

commands="kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy"
all_present() {
  local name
  for name in etcd coredns $commands; do [ -x "$bin_dir/$name" ] || return 1; done
}
if all_present && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted_stamp" ]; then
  echo "build-control-plane: up to date in .cache/k8s/bin (kubernetes $k8s_version, etcd $etcd_version)"
  exit 0
fi

echo "build-control-plane: building kubernetes $k8s_version ($commands) and etcd $etcd_version"
echo "build-control-plane: $(go version); go build -p $parallel; caches in .cache/go"
mkdir -p "$bin_dir"
rm -f "$stamp"

build() { # build <output name> <package> [ldflags]
  local name=$1 pkg=$2 flags=${3:-"-s -w"} start
  start=$(date +%s)
  echo "+ (cd tools/k8s && go build -p $parallel -trimpath -ldflags \"$flags\" -o .cache/k8s/bin/$name $pkg)"
  (cd "$mod_dir" && go build -p "$parallel" -trimpath -ldflags "$flags" -o "$bin_dir/$name.tmp" "$pkg")
  mv -f "$bin_dir/$name.tmp" "$bin_dir/$name"
  echo "build-control-plane: $name built in $(($(date +%s) - start)) s"
}

build etcd go.etcd.io/etcd/server/v3
for name in $commands; do
  build "$name" "k8s.io/kubernetes/cmd/$name" "$ldflags"
done
start=$(date +%s)
echo "+ GOBIN=.cache/k8s/bin go install -trimpath -ldflags \"-s -w\" github.com/coredns/coredns@$coredns_version"
GOBIN="$bin_dir" GOFLAGS="-modcacherw -buildvcs=false" go install -p "$parallel" -trimpath -ldflags "-s -w" \
  "github.com/coredns/coredns@$coredns_version"
echo "build-control-plane: coredns built in $(($(date +%s) - start)) s"

echo "build-control-plane: built versions:"
"$bin_dir/etcd" --version | sed 's/^/  /'
"$bin_dir/kube-apiserver" --version | sed 's/^/  /'
"$bin_dir/kubectl" version --client | sed 's/^/  /'
for name in kube-controller-manager kube-scheduler kubelet kube-proxy; do
  "$bin_dir/$name" --version | sed 's/^/  /'
done
"$bin_dir/coredns" -version | head -1 | sed 's/^/  /'
echo "$wanted_stamp" >"$stamp"
echo "build-control-plane: done; binaries in .cache/k8s/bin"
