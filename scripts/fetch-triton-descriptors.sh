#!/usr/bin/env bash
# Fetches the protobuf descriptors that Triton Inference Server's own Python
# client is generated from, for proto/tests/triton_compat.rs.
#
# The PyPI wheel `tritonclient` ships `tritonclient/grpc/service_pb2.py` and
# `tritonclient/grpc/model_config_pb2.py`; each embeds its serialized
# FileDescriptorProto as a bytes literal (the argument of
# `AddSerializedFile(b'...')`, or `serialized_pb=b'...'` in older generators).
# This script downloads the wheel (no dependencies), reads those two files
# straight out of the zip and pulls the literal out with Python's `ast`,
# without importing protobuf, and writes:
#
#   .cache/protos/triton_grpc_service.pb   FileDescriptorProto of grpc_service.proto
#   .cache/protos/triton_model_config.pb   FileDescriptorProto of model_config.proto
#
# .cache/ is ignored by git: never commit anything extracted from the wheel.
# Idempotent: does nothing when both files exist. Prints the folder's path.
set -euo pipefail
cd "$(dirname "$0")/.."
version="2.73.0"
dest=".cache/protos"
if [ -s "$dest/triton_grpc_service.pb" ] && [ -s "$dest/triton_model_config.pb" ] \
  && [ "$(cat "$dest/tritonclient-version" 2>/dev/null)" = "$version" ]; then
  echo "$dest"
  exit 0
fi
command -v python3 >/dev/null 2>&1 || { echo "fetch-triton-descriptors: python3 is missing" >&2; exit 1; }
wheels=".cache/wheels"
mkdir -p "$wheels" "$dest"
if ! ls "$wheels"/tritonclient-"$version"-*.whl >/dev/null 2>&1; then
  python3 -m pip download --quiet --no-deps --dest "$wheels" "tritonclient==$version" >&2 \
    || { echo "fetch-triton-descriptors: pip download of tritonclient==$version failed (is the Python package index reachable?)" >&2; exit 1; }
fi
wheel=$(ls "$wheels"/tritonclient-"$version"-*.whl | head -1)
python3 - "$wheel" "$dest" <<'PY'
import ast, os, sys, zipfile

wheel, dest = sys.argv[1], sys.argv[2]
wanted = {
    "tritonclient/grpc/service_pb2.py": "triton_grpc_service.pb",
    "tritonclient/grpc/model_config_pb2.py": "triton_model_config.pb",
}


def serialized_descriptor(source, name):
    """The bytes literal handed to AddSerializedFile(...) or serialized_pb=..."""
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if callee == "AddSerializedFile" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, bytes):
                return arg.value
        for kw in node.keywords:
            if kw.arg == "serialized_pb" and isinstance(kw.value, ast.Constant) \
                    and isinstance(kw.value.value, bytes):
                return kw.value.value
    sys.exit(f"fetch-triton-descriptors: no serialized descriptor found in {name}")


with zipfile.ZipFile(wheel) as z:
    for member, out in wanted.items():
        data = serialized_descriptor(z.read(member).decode("utf-8"), member)
        tmp = os.path.join(dest, out + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(dest, out))
PY
echo "$version" > "$dest/tritonclient-version"
echo "$dest"
