#!/usr/bin/env bash
# A Python virtualenv with llama.cpp (the PyPI package llama-cpp-python,
# pinned in tools/reference/llamacpp-requirements.txt), the reference for
# GGUF generation: tools/reference/make_generation_reference.py
# (scripts/make-generation-reference.sh) and the generation benchmark use it.
# Prints the venv's folder, .cache/venv-llamacpp.
#
# BY HAND ONLY, NEVER IN CI: llama-cpp-python is a source distribution that
# pip builds with cmake and the C/C++ compiler (the vendored llama.cpp, CPU
# only, tuned for this machine's CPU with GGML_NATIVE=ON but without AMX, two
# build jobs: about 8 minutes on 2 cores, more while other builds run; pip's
# cache is not used, as it would hand back a wheel built with other flags).
# Needs cmake, gcc and g++ (Debian: cmake build-essential; when run as root
# and cmake is missing, they are installed with apt-get).
#
# The venv lives in the per-user cache (scripts/cache-env.sh),
# $OPENMODEL_CACHE/venv-llamacpp-<hash of the requirements and the build
# flags>-py<python version>, and .cache/venv-llamacpp in the clone is a link
# to it. Idempotent: when the venv's stamp is there it only refreshes the
# link; it is built in place under a lock, the stamp written last, so an
# interrupted build is redone (cache_venv).
#
#   OPENMODEL_LLAMACPP_JOBS   parallel build jobs (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh

reqs="tools/reference/llamacpp-requirements.txt"
# CPU only, for this machine's CPU; no examples, tools, tests or server.
# Without AMX: on a CPU that has it (Sapphire Rapids and later),
# -march=native compiles ggml's AMX matrix multiplication in, and with
# llama-cpp-python 0.3.36 it crashes (SIGSEGV in ggml_backend_amx_mul_mat) on
# the first prompt of more than one token with the SmolLM2 Q4_1 file. The
# -mno-amx-* flags win over -march=native whatever their order (GCC), so
# ggml's AMX code is left out; AVX-512 and VNNI stay.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF '-DCMAKE_C_FLAGS=$no_amx' '-DCMAKE_CXX_FLAGS=$no_amx'"
export CMAKE_BUILD_PARALLEL_LEVEL=${OPENMODEL_LLAMACPP_JOBS:-2}
# pip caches the wheels it builds keyed by the source archive only, not by
# CMAKE_ARGS: always build.
export PIP_NO_CACHE_DIR=1

if ! command -v cmake >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "llamacpp-venv: installing cmake and build-essential (Debian packages)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake build-essential >&2
  else
    echo "llamacpp-venv: cmake and a C/C++ compiler are needed to build llama-cpp-python (Debian: apt-get install cmake build-essential)" >&2
    exit 1
  fi
fi

# The build flags and the CPU are part of the key: a native build made for
# another CPU (a shared cache) is not reused.
cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null || true)
real_venv=$(cache_venv llamacpp-venv llamacpp "$reqs" "$CMAKE_ARGS
$cpu")
cache_link "$root/.cache/venv-llamacpp" "$real_venv"
echo ".cache/venv-llamacpp"
