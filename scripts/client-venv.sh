#!/usr/bin/env bash
# A Python virtualenv with the real Triton/KServe client (tritonclient[grpc])
# for the server's protocol tests, in .cache/venv-client (ignored by git).
# Idempotent; prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=".cache/venv-client"
stamp="$venv/.installed-tritonclient-2.73.0"
if [ ! -f "$stamp" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet "tritonclient[grpc]==2.73.0" numpy >&2 \
    || { echo "client-venv: pip install of tritonclient[grpc] failed (is the Python package index reachable?)" >&2; exit 1; }
  touch "$stamp"
fi
echo "$venv/bin/python"
