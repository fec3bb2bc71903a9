#!/usr/bin/env bash
# A Python virtualenv with the real Triton/KServe client (tritonclient[grpc])
# and the real OpenAI client (openai) for the server's protocol tests and
# the demo. Prints the venv's python,
# .cache/venv-client/bin/python.
#
# The venv lives in the per-user cache (scripts/cache-env.sh), in
# $OPENMODEL_CACHE/venv-client-<tritonclient version>-openai-<openai version>-py<python version>,
# and .cache/venv-client in the clone is a link to it.
#
# Idempotent: when the venv's stamp (.installed-tritonclient-<version>) is
# there it only refreshes the link. A venv holds its own absolute path, so it
# cannot be built elsewhere and renamed: it is built in place, under a lock,
# and the stamp is written last; a venv without its stamp (an interrupted
# run) is removed and built again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh
version=2.73.0
openai_version=3.57.0
command -v python3 >/dev/null 2>&1 || { echo "client-venv: python3 is missing" >&2; exit 1; }
venv="$OPENMODEL_CACHE/venv-client-$version-openai-$openai_version-py$(cache_python_version)"
stamp="$venv/.installed-tritonclient-$version-openai-$openai_version"
if [ ! -f "$stamp" ]; then
  cache_lock "$venv"
  if [ ! -f "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet "tritonclient[grpc]==$version" "openai==$openai_version" numpy >&2 \
      || { echo "client-venv: pip install of tritonclient[grpc] and openai failed (is the Python package index reachable?)" >&2; exit 1; }
    touch "$stamp"
  fi
fi
cache_link "$root/.cache/venv-client" "$venv"
echo ".cache/venv-client/bin/python"
