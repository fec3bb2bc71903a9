#!/usr/bin/env bash
# Makes (once) the reference virtualenv, PyTorch on the CPU with
# transformers and sentence-transformers, pinned in
# tools/reference/requirements.txt, and prints its path. The test suite
# needs it for the GPU check's dry run (scripts/gpu-check.sh dry-run: the
# reference scripts run on the CPU so that they do not rot while no GPU is
# lent); scripts/make-reference.sh and make-generation-reference.sh use the
# same one.
#
# It lives in the per-user cache, $OPENMODEL_CACHE/venv-reference-<hash of
# the requirements>-py<python version>, linked from .cache/venv-reference:
# about 5.8 GB (PyPI's torch brings NVIDIA's CUDA wheels along) and about
# 2.5 minutes to install on a fast link. Idempotent: built in place under a
# lock, its stamp written last (cache_venv in scripts/cache-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh
real_venv=$(cache_venv reference-venv reference tools/reference/requirements.txt)
cache_link "$root/.cache/venv-reference" "$real_venv"
echo "$real_venv"
