#!/usr/bin/env bash
# Builds openmodel-server with the GPU path (`--features cuda`: candle's CUDA
# backend, `serve --device cuda`) on a machine with no GPU and no CUDA
# installed, and writes the stripped binary to target-cuda/openmodel-server.
#
#   scripts/build-cuda.sh [--compute-cap N] [--if-cached]
#
#   --if-cached      build only if this cache has built it before (then it is
#                    the incremental build, a minute or two); otherwise say
#                    so and exit 0. scripts/test.sh uses it.
#   --compute-cap N  the GPU generation the kernels are compiled for (also
#                    OPENMODEL_CUDA_COMPUTE_CAP), default 90: H100, H200,
#                    GH200 only. One per build: 80 A100, 86 A10/A40, 89
#                    L4/L40S, 100 B200, 120 RTX PRO 6000 Blackwell
#                    (docs/images.md, "Building the CUDA server here").
#
# 1. The CUDA 13.0 toolkit, as NVIDIA's PyPI wheels pinned with their
#    SHA-256 in tools/cuda/requirements.txt (nvcc and its parts; cudart,
#    nvrtc, cuRAND, cuBLAS), goes into a virtualenv in the per-user cache,
#    $OPENMODEL_CACHE/venv-cuda-<hash of the requirements>-py<python>
#    (.cache/venv-cuda links to it); its <site-packages>/nvidia/cu13 is
#    CUDA_HOME (bin/nvcc, include/, lib/). About 1.5 GB, pip's cache off.
# 2. The link folder, $OPENMODEL_CACHE/cuda-link/<key>: what the linker
#    looks for and the wheels lack. candle-core links through cudarc with
#    dynamic linking (-lcuda -lnvrtc -lcurand -lcublas -lcublasLt) and
#    candle-kernels adds -lcudart; the wheels hold only the versioned files
#    (libcublas.so.13, …), so lib<name>.so links to them are made here. The
#    driver, libcuda.so.1, is no wheel (it comes with the GPU's driver):
#    libcuda.so here is a stub built with gcc, soname libcuda.so.1, one
#    function per driver entry point that cudarc's bindings declare, each
#    returning CUDA_ERROR_STUB_LIBRARY (34). Only the linker reads the
#    folder; it is never shipped, and the binary loads the real driver.
# 3. cargo build --locked --release -p openmodel-server --features cuda,
#    with CUDA_HOME, its bin on PATH, CUDA_COMPUTE_CAP and
#    RUSTFLAGS=-L native=<link folder>, in its own target folder,
#    $OPENMODEL_CACHE/cargo-target-cuda/sm<N>-<hash of rustc -vV, the
#    requirements and N> (target-cuda in the clone links to it; git
#    ignores it). Cold on 2 cores: about 30 minutes, a third of it nvcc
#    compiling candle's kernels.
# 4. strip into target-cuda/openmodel-server, run its --version with the
#    stub driver (every library it needs must load and every symbol bind),
#    and print its size, the build's time and its NEEDED libraries; write
#    target-cuda/cuda-env (where the wheels' libraries and the stub driver
#    are), which scripts/build-images.sh --cuda reads.
#
# Idempotent: the venv (its stamp written last, under a lock) and the link
# folder (built aside and renamed) are reused while the pins are the same,
# so a second run is the incremental cargo build. x86_64 Linux; needs
# cargo, python3, gcc/g++ (nvcc's host compiler), binutils (strip,
# readelf) and the Python package index.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

fail() { echo "build-cuda: $*" >&2; exit 1; }

cap=${OPENMODEL_CUDA_COMPUTE_CAP:-90}
if_cached=0
while [ $# -gt 0 ]; do
  case "$1" in
    --compute-cap) [ $# -ge 2 ] || fail "--compute-cap needs a number, e.g. 90"; cap=$2; shift 2 ;;
    --compute-cap=*) cap=${1#--compute-cap=}; shift ;;
    --if-cached) if_cached=1; shift ;;
    -h|--help) sed -n '2,51p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument '$1' (see --help)" ;;
  esac
done
case "$cap" in
  7[5-9] | [89][0-9] | 1[0-9][0-9]) ;;
  *) fail "compute capability '$cap' is not one CUDA 13 builds for: a number from 75 (Turing) up, e.g. 80, 89, 90, 120" ;;
esac
[ "$(uname -sm)" = "Linux x86_64" ] || fail "the pinned CUDA wheels are for x86_64 Linux, not $(uname -sm)"
for tool in cargo rustc python3 gcc g++ strip readelf; do
  command -v "$tool" >/dev/null 2>&1 \
    || fail "'$tool' is missing (Rust: rustup; the others, Debian: apt-get install python3 python3-venv build-essential)"
done

# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh
reqs=tools/cuda/requirements.txt
started=$(date +%s)
# The build's own target folder (step 3): the kernels depend on the toolkit
# and N, which candle's build scripts do not all watch.
target_dir="$OPENMODEL_CACHE/cargo-target-cuda/sm$cap-$({ rustc -vV; cat "$reqs"; echo "$cap"; } | cache_key)"
if [ "$if_cached" = 1 ] && [ ! -x "$target_dir/release/openmodel-server" ]; then
  echo "build-cuda: not built in this cache before ($target_dir); skipped. Run scripts/build-cuda.sh once (about 30 minutes cold) and later runs with --if-cached rebuild it" >&2
  # A link left from another toolchain or pin set is not this build.
  if [ -L "$root/target-cuda" ]; then rm -f "$root/target-cuda"; fi
  exit 0
fi

# 1. The toolkit. The wheels are 1 GB: not kept in pip's cache too.
export PIP_NO_CACHE_DIR=1
venv=$(cache_venv build-cuda cuda "$reqs")
cache_link "$root/.cache/venv-cuda" "$venv"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
cuda_home="$site/nvidia/cu13"
[ -x "$cuda_home/bin/nvcc" ] || fail "$cuda_home/bin/nvcc is missing: the wheels of $reqs did not install nvcc there (remove $venv and rerun)"

# 2. The link folder. The driver's entry points: the `fn cu…(` declarations
# of cudarc's driver bindings (every CUDA version it knows, so a superset of
# what the link asks for).
cudarc=$(cargo metadata --locked --format-version 1 --features openmodel-server/cuda \
  | python3 -c '
import json, os, sys
found = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"]
if len(found) != 1:
    sys.exit("build-cuda: cargo metadata lists %d cudarc packages, expected 1" % len(found))
print(os.path.dirname(found[0]["manifest_path"]))
')
bindings="$cudarc/src/driver/sys/mod.rs"
[ -f "$bindings" ] || fail "$bindings is missing: cudarc's layout changed; find its driver bindings and update this script"
symbols=$(grep -oE '^[[:space:]]+fn cu[A-Za-z0-9_]+\(' "$bindings" | sed -E 's/^[[:space:]]+fn //; s/\($//' | sort -u)
[ "$(wc -l <<<"$symbols")" -gt 100 ] || fail "found only $(wc -l <<<"$symbols") driver functions in $bindings: cudarc's layout changed"
# The libraries linked by name, each the one versioned file of the wheels.
libs=(cudart nvrtc curand cublas cublasLt)
link_key=$({ cat "$reqs"; printf '%s\n' "$symbols" "${libs[@]}"; gcc -dumpfullversion; echo "stub returns 34"; } | cache_key)
link="$OPENMODEL_CACHE/cuda-link/$link_key"
if [ ! -d "$link" ]; then
  echo "build-cuda: making the link folder $link ($(wc -l <<<"$symbols") driver functions in the libcuda stub)" >&2
  tmp=$(cache_tmp "$link")
  trap 'rm -rf "$tmp"' EXIT
  {
    echo "/* A link-time stand-in for the CUDA driver (libcuda.so.1), made by"
    echo "   scripts/build-cuda.sh from $bindings. Never shipped: every"
    echo "   function returns CUDA_ERROR_STUB_LIBRARY. */"
    while IFS= read -r symbol; do
      printf 'int %s(void) { return 34; }\n' "$symbol"
    done <<<"$symbols"
  } >"$tmp/libcuda-stub.c"
  gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$tmp/libcuda.so" "$tmp/libcuda-stub.c"
  for lib in "${libs[@]}"; do
    found=$(compgen -G "$cuda_home/lib/lib$lib.so.*" || true)
    if [ -z "$found" ] || [ "$(wc -l <<<"$found")" != 1 ]; then
      fail "expected one $cuda_home/lib/lib$lib.so.<version> from the wheels, found: ${found:-none}"
    fi
    ln -s "$found" "$tmp/lib$lib.so"
  done
  # For the check in step 4 only: the name the binary asks the loader for.
  mkdir "$tmp/run"
  ln -s ../libcuda.so "$tmp/run/libcuda.so.1"
  cache_commit "$tmp" "$link"
  trap - EXIT
fi

# 3. The build.
mkdir -p "$target_dir"
cache_link "$root/target-cuda" "$target_dir"
export CUDA_HOME="$cuda_home" PATH="$cuda_home/bin:$PATH" CUDA_COMPUTE_CAP="$cap" CARGO_TARGET_DIR="$target_dir"
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-L native=$link"
echo "build-cuda: cargo build --release -p openmodel-server --features cuda (CUDA $("$cuda_home/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p'), compute capability $cap) into target-cuda -> $target_dir" >&2
build_started=$(date +%s)
cargo build --locked --release -p openmodel-server --features cuda
build_s=$(($(date +%s) - build_started))

# 4. The stripped binary, checked.
built="$target_dir/release/openmodel-server"
out="$target_dir/openmodel-server"
if [ ! -f "$out" ] || [ "$built" -nt "$out" ]; then
  strip --strip-unneeded -o "$out.tmp" "$built"
  mv -f "$out.tmp" "$out"
fi
version=$(LD_LIBRARY_PATH="$link/run:$cuda_home/lib" "$out" --version) \
  || fail "target-cuda/openmodel-server --version failed with the stub driver and the wheels' libraries (above)"
# Where its libraries are here, for scripts/build-images.sh --cuda and the
# image test (plain KEY=value lines).
printf '%s\n' "# written by scripts/build-cuda.sh" "CUDA_LIB_DIR=$cuda_home/lib" \
  "CUDA_DRIVER_STUB_DIR=$link/run" >"$target_dir/cuda-env.tmp"
mv -f "$target_dir/cuda-env.tmp" "$target_dir/cuda-env"
needed=$(readelf -d "$out" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
size=$(stat -c %s "$out")
echo "build-cuda: target-cuda/openmodel-server ($version): $((size / 1000000)).$((size / 100000 % 10)) MB stripped ($size bytes), kernels for compute capability $cap"
echo "build-cuda: cargo build took $((build_s / 60)) min $((build_s % 60)) s, the whole run $(($(date +%s) - started)) s"
echo "build-cuda: NEEDED: $needed"
echo "build-cuda: on a GPU machine it needs the driver (libcuda.so.1) and the wheels' libraries, e.g. LD_LIBRARY_PATH=$cuda_home/lib"
