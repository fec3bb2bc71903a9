#!/usr/bin/env bash
# Assembles the root filesystem of one OpenModel image: the stripped binary,
# the shared libraries it loads (with the dynamic loader, exactly as `ldd`
# lists them), the CA bundle, a `nonroot` user and group (65532, as in
# distroless) and an empty /tmp. Nothing else: no shell, no package manager.
#
#   images/rootfs.sh [--libs-from DIR:IMAGE_DIR]... [--node-lib SONAME:STUB_DIR]...
#                    <binary> <rootfs dir>
#
#   --libs-from DIR:IMAGE_DIR  libraries found in DIR (e.g. the CUDA wheels'
#                    lib folder) land in IMAGE_DIR inside the image instead
#                    of at their path here; DIR is searched first
#   --node-lib SONAME:STUB_DIR a library the node provides at run time
#                    (libcuda.so.1: the GPU driver, mounted by the NVIDIA
#                    container toolkit); resolved here from STUB_DIR, a
#                    link-time stand-in, and never copied into the image
#
# The binary lands in <rootfs>/usr/local/bin/<its name>. Used by
# scripts/build-images.sh on the build machine and by the Containerfiles in
# their builder stage, so both produce the same layout.
set -euo pipefail

usage="usage: images/rootfs.sh [--libs-from DIR:IMAGE_DIR]... [--node-lib SONAME:STUB_DIR]... <binary> <rootfs dir>"
fail() { echo "rootfs: $*" >&2; exit 1; }
libs_from=()
node_libs=()
search=()
while [ $# -gt 0 ]; do
  case "$1" in
    --libs-from | --node-lib)
      if [ $# -lt 2 ] || [[ $2 != *:* ]]; then fail "$1 needs a value of the form A:B ($usage)"; fi
      dir=${2%%:*}
      if [ "$1" = --libs-from ]; then
        [ -d "$dir" ] || fail "--libs-from: $dir is not a folder"
        libs_from+=("${dir%/}:${2#*:}")
        search+=("${dir%/}")
      else
        stub_dir=${2#*:}
        [ -e "$stub_dir/$dir" ] || fail "--node-lib: $stub_dir/$dir is missing (the stand-in ldd resolves $dir to)"
        node_libs+=("$dir")
        search+=("$stub_dir")
      fi
      shift 2
      ;;
    --) shift; break ;;
    -*) fail "unknown option '$1' ($usage)" ;;
    *) break ;;
  esac
done
if [ $# -ne 2 ]; then
  echo "$usage" >&2
  exit 2
fi
binary=$1
rootfs=$2
ca_bundle=/etc/ssl/certs/ca-certificates.crt

[ -x "$binary" ] || fail "$binary is not an executable file"
command -v ldd >/dev/null 2>&1 || fail "'ldd' is missing (apt-get install libc-bin)"
command -v strip >/dev/null 2>&1 || fail "'strip' is missing (apt-get install binutils)"
[ -f "$ca_bundle" ] || fail "$ca_bundle is missing (apt-get install ca-certificates)"

case "$(realpath -m "$rootfs")" in
  /|/usr|/etc|/home) fail "refusing to use $rootfs as the image's root (it is emptied first)" ;;
esac
rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 0755 "$rootfs" "$rootfs/usr" "$rootfs/usr/local" "$rootfs/usr/local/bin" "$rootfs/etc" \
  "$rootfs/etc/ssl" "$rootfs/etc/ssl/certs"
chmod 1777 "$rootfs/tmp"

# The binary without symbols (release builds keep line tables for
# backtraces; the image does not need them, they stay in target/).
name=$(basename "$binary")
strip --strip-unneeded -o "$rootfs/usr/local/bin/$name" "$binary"
chmod 0755 "$rootfs/usr/local/bin/$name"

# Shared libraries at the paths the loader looks for them: "libc.so.6 =>
# /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2
# (0x…)". Symlinks are resolved (cp -L) so the image holds real files.
search_path=$(IFS=:; echo "${search[*]}")
ldd_output=$(LD_LIBRARY_PATH="$search_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$binary")
if [[ $ldd_output == *"not found"* ]]; then
  fail "some libraries of $binary are not found: $(grep 'not found' <<<"$ldd_output" | tr -s ' \t' ' ')"
fi
# "<soname> <path>" per library.
libs=$(awk '$2 == "=>" && $3 ~ /^\// {print $1, $3} $1 ~ /^\// {print $1, $1}' <<<"$ldd_output")
[ -n "$libs" ] || fail "ldd lists no libraries for $binary (a static binary needs none, but ours are dynamic; is it for this machine?)"
while read -r soname lib; do
  if [[ " ${node_libs[*]} " == *" $soname "* ]]; then
    continue
  fi
  dest=$lib
  for mapping in "${libs_from[@]}"; do
    if [ "$(dirname "$lib")" = "${mapping%%:*}" ]; then
      dest="${mapping#*:}/$soname"
    fi
  done
  mkdir -p "$rootfs$(dirname "$dest")"
  cp -L "$lib" "$rootfs$dest"
done <<<"$libs"

cp "$ca_bundle" "$rootfs$ca_bundle"
chmod 0644 "$rootfs$ca_bundle"
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
# The home directory; the image build gives it to 65532 (buildah copy
# --chown, COPY --chown), as it cannot be owned here without root.
mkdir -p "$rootfs/home/nonroot"
chmod 0755 "$rootfs/home" "$rootfs/home/nonroot"
