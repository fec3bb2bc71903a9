# shellcheck shell=bash
# Sourced by the scripts that build Go programs (build-control-plane.sh,
# fetch-kwok.sh): Go's module and build caches live in the per-user cache
# ($OPENMODEL_CACHE/go, scripts/cache-env.sh), shared by every clone (both
# are content-addressed, so sharing them is safe), with the Go that is
# installed, and static binaries. Needs $root (the repository) set; extra
# GOFLAGS may follow in the caller.
: "${root:?go-env.sh needs root, the repository folder}"
# shellcheck source=scripts/cache-env.sh
. "$root/scripts/cache-env.sh"
export GOPATH="$OPENMODEL_CACHE/go"
export GOMODCACHE="$OPENMODEL_CACHE/go/mod"
export GOCACHE="$OPENMODEL_CACHE/go/build"
# The module cache is read-only by default, which makes `rm -rf` of it fail.
export GOFLAGS="-modcacherw -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
if [ -d "$root/.cache/go" ] && [ ! -L "$root/.cache/go" ]; then
  echo "go-env: .cache/go in the clone is no longer used (Go's caches are in $OPENMODEL_CACHE/go now); remove it with: rm -rf .cache/go" >&2
fi
