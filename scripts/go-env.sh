# shellcheck shell=bash
# Sourced by the scripts that build Go programs (build-control-plane.sh,
# fetch-kwok.sh): everything Go writes stays inside the repository's ignored
# cache, with the Go that is installed, and static binaries. Needs $root (the
# repository) set; extra GOFLAGS may follow in the caller.
: "${root:?go-env.sh needs root, the repository folder}"
export GOPATH="$root/.cache/go"
export GOMODCACHE="$root/.cache/go/mod"
export GOCACHE="$root/.cache/go/build"
# The module cache is read-only by default, which makes `rm -rf .cache` fail.
export GOFLAGS="-modcacherw -buildvcs=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
