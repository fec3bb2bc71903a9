#!/usr/bin/env bash
# Regenerates server/tests/fixtures/minilm_reference.json: reference
# embeddings of all-MiniLM-L6-v2 computed by sentence-transformers, which the
# Rust server's tests compare against.
#
# RUN BY HAND ONLY, NEVER IN CI: it installs PyTorch (several GiB) into a
# virtualenv in the per-user cache (scripts/cache-env.sh),
# $OPENMODEL_CACHE/venv-reference-<hash of tools/reference/requirements.txt>-py<python version>,
# linked from .cache/venv-reference. CI only reads the committed fixture.
#
# Idempotent: creates the virtualenv when missing (cache_venv in
# scripts/cache-env.sh: a new one when tools/reference/requirements.txt
# changed; built in place under a lock, its stamp written last, so an
# interrupted install is redone), fetches the model folder with
# scripts/fetch-model.sh (a no-op when present), runs
# tools/reference/make_reference.py, and prints where the fixture went.
# Nothing is downloaded from a model hub (HF_HUB_OFFLINE=1): the model is
# loaded from the local folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh

reqs="tools/reference/requirements.txt"
out="server/tests/fixtures/minilm_reference.json"

real_venv=$(cache_venv make-reference reference "$reqs")
cache_link "$root/.cache/venv-reference" "$real_venv"
venv=".cache/venv-reference"

model_dir=$(scripts/fetch-model.sh)

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$venv/bin/python" tools/reference/make_reference.py "$model_dir" "$out"

echo "make-reference: wrote $out ($(wc -c < "$out") bytes)"
