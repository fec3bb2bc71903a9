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
# Both files and the wheel live in the per-user cache (scripts/cache-env.sh):
# $OPENMODEL_CACHE/protos/tritonclient-<version>/ and $OPENMODEL_CACHE/wheels/;
# .cache/protos in the clone is a link to the first. Never commit anything
# extracted from the wheel.
#
# Idempotent: when the cached folder holds both files it only refreshes the
# link. The folder is written in a temporary folder and renamed into place,
# so it is complete whenever it exists. Prints .cache/protos.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh
version="2.73.0"
link="$root/.cache/protos"
dest="$OPENMODEL_CACHE/protos/tritonclient-$version"
if [ -s "$dest/triton_grpc_service.pb" ] && [ -s "$dest/triton_model_config.pb" ] \
  && [ "$(cat "$dest/tritonclient-version" 2>/dev/null)" = "$version" ]; then
  cache_link "$link" "$dest"
  echo ".cache/protos"
  exit 0
fi
tmp=$(cache_tmp "$dest")
trap 'rm -rf "$tmp"' EXIT
wheel=$(cache_wheel fetch-triton-descriptors tritonclient "$version" tritonclient "$tmp")
python3 - "$wheel" "$tmp" <<'PY'
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
echo "$version" >"$tmp/tritonclient-version"
cache_commit "$tmp" "$dest"
trap - EXIT
cache_link "$link" "$dest"
echo ".cache/protos"
