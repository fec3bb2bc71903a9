#!/usr/bin/env bash
# The GPU check: the CUDA server beside PyTorch on the same GPU, in one
# prepared run that fits a lent GPU machine's minutes.
#
#   scripts/gpu-check.sh pack              # here: the CUDA binary, gzipped, into .gpu-check/
#   scripts/gpu-check.sh run [--out DIR]   # on the GPU machine (carry .gpu-check)
#   scripts/gpu-check.sh dry-run [--out DIR] [--binary PATH]
#                                          # here, on the CPU: every step but the GPU
#
# pack: compresses target-cuda/openmodel-server (scripts/build-cuda.sh) into
#   .gpu-check/openmodel-server.gz (git ignores the folder) and checks that it
#   and the working tree fit what travels to a lent machine (64 MiB), with a
#   stand-in for cuRAND (libcurand.so.10 is 59 MB gzipped; candle links it
#   for random tensors, which the server never makes): each function the
#   binary imports returns CURAND_STATUS_NOT_INITIALIZED; run uses it only
#   when the machine has no cuRAND, and says so. Then,
#   with the device tool: run `scripts/gpu-check.sh run`, carry [".gpu-check"],
#   timeout_s 540.
# run: unpacks the binary, finds the CUDA libraries it needs (libcudart,
#   cuBLAS, cuRAND; the driver's libcuda) among the machine's (its CUDA
#   toolkit, PyTorch's nvidia wheels, ldconfig) and fails naming any that is
#   missing, then runs tools/gpu-check/check.py --device cuda with the
#   machine's python3 (torch, transformers): parity of generation (tiny
#   Llama, Qwen2, Qwen3: logits within 1e-3 of transformers in FP32, greedy
#   tokens identical) and embeddings (cosine >= 0.9999 FP32, >= 0.999 FP16),
#   and tokens/s of both beside PyTorch. Writes DIR/gpu-check.json (default
#   $OUT, else .gpu-check/out) and DIR/gpu-check.log. Bounded to 8 minutes.
# dry-run: the same on this machine's CPU with small models: packs the given
#   binary (default target/release/openmodel-server, else target/debug/) into
#   a temporary folder as pack does, unpacks it, and runs check.py --dry-run
#   --device candle-cpu with the reference virtualenv (torch on the CPU,
#   scripts/reference-venv.sh). The test suite runs it
#   (server/tests/gpu_check.rs), so the script does not rot while no GPU is
#   lent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

fail() { echo "gpu-check: $*" >&2; exit 1; }
usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }

carry_limit=$((64 * 1024 * 1024))
mode=${1:-}
[ -n "$mode" ] || { usage >&2; exit 2; }
shift
out="" binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || fail "--out needs a folder"; out=$2; shift 2 ;;
    --binary) [ $# -ge 2 ] || fail "--binary needs a path"; binary=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) fail "unknown argument '$1' (see --help)" ;;
  esac
done

# pack_into <binary> <folder>: the gzipped binary and its SHA-256, checked
# against what may travel.
pack_into() {
  local bin=$1 dir=$2
  [ -x "$bin" ] || fail "$bin is missing or not executable"
  mkdir -p "$dir"
  gzip -6 -c "$bin" >"$dir/openmodel-server.gz.tmp"
  mv -f "$dir/openmodel-server.gz.tmp" "$dir/openmodel-server.gz"
  sha256sum "$bin" | sed 's/ .*//' >"$dir/openmodel-server.sha256"
  local packed tree
  packed=$(stat -c %s "$dir/openmodel-server.gz")
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
  curand_stub "$bin" "$dir"
  echo "gpu-check: packed $bin ($(stat -c %s "$bin") bytes) into $dir/openmodel-server.gz: $packed bytes; working tree $tree bytes" >&2
  [ $((packed + tree)) -lt "$carry_limit" ] \
    || fail "the packed binary and the working tree are $((packed + tree)) bytes, over the 64 MiB that travel"
}

# curand_stub <binary> <folder>: <folder>/curand-stub/libcurand.so.10,
# exporting the binary's cuRAND imports (under libcurand.so.10's symbol
# version, as the binary asks for them), each returning 101.
curand_stub() {
  local bin=$1 dir=$2 symbols
  symbols=$(nm -D --undefined-only "$bin" | sed -n 's/.* U \(curand[A-Za-z0-9_]*\)@libcurand\.so\.10$/\1/p')
  rm -rf "$dir/curand-stub"
  mkdir -p "$dir/curand-stub"
  [ -n "$symbols" ] || return 0
  {
    echo "/* A stand-in for cuRAND, made by scripts/gpu-check.sh pack. */"
    while IFS= read -r symbol; do printf 'int %s(void) { return 101; }\n' "$symbol"; done <<<"$symbols"
  } >"$dir/curand-stub/stub.c"
  echo "libcurand.so.10 { global: *; };" >"$dir/curand-stub/version.map"
  gcc -shared -fPIC -O1 -Wl,-soname,libcurand.so.10 -Wl,--version-script="$dir/curand-stub/version.map" \
    -o "$dir/curand-stub/libcurand.so.10" "$dir/curand-stub/stub.c"
}

# unpack_from <folder> <to>: the binary, checked against its SHA-256.
unpack_from() {
  local dir=$1 to=$2
  [ -f "$dir/openmodel-server.gz" ] || fail "$dir/openmodel-server.gz is missing: run scripts/gpu-check.sh pack here and carry .gpu-check"
  gzip -dc "$dir/openmodel-server.gz" >"$to"
  chmod +x "$to"
  [ "$(sha256sum "$to" | sed 's/ .*//')" = "$(cat "$dir/openmodel-server.sha256")" ] \
    || fail "the unpacked binary does not match $dir/openmodel-server.sha256"
}

# cuda_library_path <binary>: the folders holding the CUDA libraries it
# needs, for LD_LIBRARY_PATH; fails naming the ones not found.
cuda_library_path() {
  local bin=$1 dirs="" missing="" lib found
  local search=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu)
  local site
  for site in $(python3 -c 'import site, sys; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
    search+=("$site"/nvidia/cu13/lib "$site"/nvidia/*/lib)
  done
  for lib in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(lib\(cuda\|cudart\|cublas\|cublasLt\|curand\|nvrtc\)\.so[.0-9]*\)\]/\1/p'); do
    found=""
    for d in "${search[@]}"; do
      if [ -e "$d/$lib" ]; then found=$d; break; fi
    done
    if [ -z "$found" ]; then
      found=$(ldconfig -p | sed -n "s/^[[:space:]]*$lib (.*) => \(.*\)\/$lib$/\1/p" | sed -n 1p)
    fi
    if [ -z "$found" ]; then missing="$missing $lib"; continue; fi
    case ":$dirs:" in *":$found:"*) ;; *) dirs="${dirs:+$dirs:}$found" ;; esac
  done
  if [[ " $missing " == *" libcurand.so.10 "* ]] && [ -f .gpu-check/curand-stub/libcurand.so.10 ]; then
    echo "gpu-check: no cuRAND on this machine: the stand-in from .gpu-check/curand-stub is used (the server never calls it)" >&2
    missing=${missing/ libcurand.so.10/}
    dirs="${dirs:+$dirs:}$root/.gpu-check/curand-stub"
  fi
  [ -z "$missing" ] || fail "CUDA libraries not found on this machine:$missing (searched ${search[*]} and ldconfig)"
  echo "$dirs"
}

case "$mode" in
  pack)
    pack_into "${binary:-target-cuda/openmodel-server}" .gpu-check
    echo "gpu-check: now, with the device tool: command 'scripts/gpu-check.sh run', carry [\".gpu-check\"], timeout_s 540" >&2
    ;;
  run)
    out=${out:-${OUT:-.gpu-check/out}}
    mkdir -p "$out"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    unpack_from .gpu-check "$work/openmodel-server"
    libs=$(cuda_library_path "$work/openmodel-server")
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
    PYTHONUNBUFFERED=1 timeout 480 python3 tools/gpu-check/check.py \
      --binary "$work/openmodel-server" --device cuda --out "$out/gpu-check.json" 2>&1 | tee "$out/gpu-check.log"
    ;;
  dry-run)
    out=${out:-.gpu-check/dry-run}
    mkdir -p "$out"
    if [ -z "$binary" ]; then
      for b in target/release/openmodel-server target/debug/openmodel-server; do
        if [ -x "$b" ]; then binary=$b; break; fi
      done
      [ -n "$binary" ] || fail "no openmodel-server binary: cargo build --release -p openmodel-server"
    fi
    venv=$(scripts/reference-venv.sh)
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    pack_into "$binary" "$work/carried"
    unpack_from "$work/carried" "$work/openmodel-server"
    PYTHONUNBUFFERED=1 timeout 900 "$venv/bin/python" tools/gpu-check/check.py --dry-run \
      --binary "$work/openmodel-server" --device candle-cpu --out "$out/gpu-check.json"
    ;;
  *) fail "unknown mode '$mode': pack, run or dry-run (see --help)" ;;
esac
