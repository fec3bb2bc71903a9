#!/usr/bin/env bash
# Regenerates server/tests/fixtures/minilm_reference.json: reference
# embeddings of all-MiniLM-L6-v2 computed by sentence-transformers, which the
# Rust server's tests compare against.
#
# RUN BY HAND ONLY, NEVER IN CI: it installs PyTorch (several GiB) into
# .cache/venv-reference. CI only reads the committed fixture.
#
# Idempotent: creates the virtualenv when missing (or when
# tools/reference/requirements.txt changed), fetches the model folder with
# scripts/fetch-model.sh (a no-op when present), runs
# tools/reference/make_reference.py, and prints where the fixture went.
# Nothing is downloaded from a model hub (HF_HUB_OFFLINE=1): the model is
# loaded from the local folder.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=".cache/venv-reference"
reqs="tools/reference/requirements.txt"
out="server/tests/fixtures/minilm_reference.json"
stamp="$venv/.requirements.sha256"

want=$(sha256sum "$reqs" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "make-reference: installing $reqs into $venv (PyTorch: a large download)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --progress-bar off -r "$reqs" >&2
  echo "$want" > "$stamp"
fi

model_dir=$(scripts/fetch-model.sh)

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$venv/bin/python" tools/reference/make_reference.py "$model_dir" "$out"

echo "make-reference: wrote $out ($(wc -c < "$out") bytes)"
