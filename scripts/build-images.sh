#!/usr/bin/env bash
# Builds the OCI images of openmodel-operator, openmodel-ledger and
# openmodel-server on this machine, without a container daemon: cargo builds
# the binaries, images/rootfs.sh assembles each root filesystem (binary,
# shared libraries, CA bundle, user 65532) and buildah (Debian package) writes
# it as a one-layer image from scratch. The images land in
# .cache/images/<binary>.oci.tar (OCI image layout in a tar; `skopeo copy
# oci-archive:… docker://…` or `podman load` take it), ignored by git.
# images/Containerfile.* document the same build for a registry pipeline.
#
#   scripts/build-images.sh [--profile release|debug] [--no-build]
#   scripts/build-images.sh --cuda
#
#   --profile  the cargo profile of the binaries, default release (debug
#              binaries are stripped too, but are slower and larger)
#   --no-build use the binaries already in target/<profile>/ as they are
#   --cuda     only the CUDA server image, openmodel-server-cuda.oci.tar
#              (tag <version>-cuda), from target-cuda/openmodel-server as
#              scripts/build-cuda.sh left it: the CUDA runtime libraries it
#              loads (cudart, cuBLAS, cuBLASLt, cuRAND, from the same pinned
#              wheels) in /usr/local/cuda/lib64, and not libcuda.so.1, which
#              the node's driver provides (the NVIDIA container toolkit
#              mounts it). About 800 MB unpacked, cuBLASLt most of it.
#
# Idempotent: an image is rebuilt only when its inputs changed (the binary's
# digest, its libraries, the CA bundle, version, revision, this script or
# images/rootfs.sh; recorded in .cache/images/<binary>.stamp).
#
# Needs (Debian packages): buildah, binutils (strip), ca-certificates; root,
# or a user that buildah can run rootless. Buildah's own storage is kept in
# .cache/images/buildah (vfs driver, chroot isolation: no daemon, no overlay
# mounts, works inside an unprivileged container sandbox).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out="$root/.cache/images"
binaries=(openmodel-operator openmodel-ledger openmodel-server)

fail() { echo "build-images: $*" >&2; exit 1; }

profile=release
build=1
cuda=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || fail "--profile needs release or debug"; profile=$2; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    --no-build) build=0; shift ;;
    --cuda) cuda=1; shift ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument '$1' (see --help)" ;;
  esac
done
case "$profile" in
  release) cargo_profile=(--release); target_dir=target/release ;;
  debug|dev) profile=debug; cargo_profile=(); target_dir=target/debug ;;
  *) fail "--profile must be release or debug, not '$profile'" ;;
esac

command -v buildah >/dev/null 2>&1 || fail "'buildah' is missing; install it with apt-get install buildah (no daemon needed)"
command -v strip >/dev/null 2>&1 || fail "'strip' is missing; install it with apt-get install binutils"
[ -f /etc/ssl/certs/ca-certificates.crt ] || fail "/etc/ssl/certs/ca-certificates.crt is missing; install it with apt-get install ca-certificates"
command -v python3 >/dev/null 2>&1 || fail "'python3' is missing (scripts/setup.sh says how to get it)"

# One row per image: the archive's name, the binary, the tag's suffix and
# its description; rootfs_args and image_env add to every row.
images=()
rootfs_args=()
image_env=()
if [ "$cuda" = 1 ]; then
  [ "$profile" = release ] || fail "--cuda takes the release binary of scripts/build-cuda.sh; drop --profile"
  cuda_env=target-cuda/cuda-env
  if [ ! -x target-cuda/openmodel-server ] || [ ! -f "$cuda_env" ]; then
    fail "target-cuda/openmodel-server or $cuda_env is missing: run scripts/build-cuda.sh first (about 30 minutes cold)"
  fi
  cuda_lib_dir=$(sed -n 's/^CUDA_LIB_DIR=//p' "$cuda_env")
  stub_dir=$(sed -n 's/^CUDA_DRIVER_STUB_DIR=//p' "$cuda_env")
  if [ ! -d "$cuda_lib_dir" ] || [ ! -e "$stub_dir/libcuda.so.1" ]; then
    fail "$cuda_env names folders that are gone ($cuda_lib_dir, $stub_dir): run scripts/build-cuda.sh again"
  fi
  images+=("openmodel-server-cuda target-cuda/openmodel-server -cuda OpenModel server: Open Inference Protocol v2 model server (CUDA build: serve --device cuda; the node provides libcuda)")
  rootfs_args=(--libs-from "$cuda_lib_dir:/usr/local/cuda/lib64" --node-lib "libcuda.so.1:$stub_dir")
  image_env=(--env LD_LIBRARY_PATH=/usr/local/cuda/lib64 --env NVIDIA_VISIBLE_DEVICES=all
    --env "NVIDIA_DRIVER_CAPABILITIES=compute,utility")
else
  binaries=(openmodel-operator openmodel-ledger openmodel-server)
  if [ "$build" = 1 ]; then
    bin_args=()
    for b in "${binaries[@]}"; do bin_args+=(--bin "$b"); done
    echo "+ cargo build --locked ${cargo_profile[*]} ${bin_args[*]}"
    cargo build --locked "${cargo_profile[@]}" "${bin_args[@]}"
  fi
  for b in "${binaries[@]}"; do
    [ -x "$target_dir/$b" ] || fail "$target_dir/$b is missing; run without --no-build (or cargo build ${cargo_profile[*]} --bin $b)"
  done
  images+=(
    "openmodel-operator $target_dir/openmodel-operator - OpenModel operator: reconciles OpenModel resources and serves the admission webhook"
    "openmodel-ledger $target_dir/openmodel-ledger - OpenModel ledger: the tamper-evident audit ledger service"
    "openmodel-server $target_dir/openmodel-server - OpenModel server: Open Inference Protocol v2 model server (CPU build)"
  )
fi

# Labels: the version and source from Cargo's metadata, the revision from git
# ("-dirty" when the working tree has changes, so an image never claims a
# commit it was not built from).
read -r version source < <(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
p = {p["name"]: p for p in json.load(sys.stdin)["packages"]}["openmodel-server"]
print(p["version"], p["repository"] or "")')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi

mkdir -p "$out"
export BUILDAH_ISOLATION=chroot
buildah_cmd=(buildah --root "$out/buildah/root" --runroot "$out/buildah/run" --storage-driver vfs)

human() { python3 -c 'import sys; n=int(sys.argv[1]); print(f"{n/1e6:.1f} MB")' "$1"; }

summary=()
for row in "${images[@]}"; do
  read -r name binary suffix description <<<"$row"
  [ "$suffix" = - ] && suffix=
  b=$(basename "$binary")
  image="$out/$name.oci.tar"
  stamp_file="$out/$name.stamp"
  stamp=$(
    {
      echo "profile $profile version $version revision $revision source $source ${rootfs_args[*]} ${image_env[*]}"
      sha256sum "$binary" scripts/build-images.sh images/rootfs.sh /etc/ssl/certs/ca-certificates.crt | cut -d' ' -f1
      ldd "$binary" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | xargs -r sha256sum
      buildah --version
    } | sha256sum | cut -d' ' -f1
  )
  if [ -f "$image" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    echo "build-images: $name is up to date"
  else
    echo "build-images: building $name ($b:$version$suffix, $profile, revision $revision)"
    rm -f "$stamp_file"
    rootfs="$out/rootfs/$name"
    images/rootfs.sh "${rootfs_args[@]}" "$binary" "$rootfs"
    ctr=$("${buildah_cmd[@]}" from --quiet scratch)
    # Clean the working container up on any failure.
    trap '"${buildah_cmd[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
    "${buildah_cmd[@]}" copy --quiet "$ctr" "$rootfs/" / >/dev/null
    # The user's home belongs to the user (its contents are copied again
    # with --chown; /home itself stays root's).
    "${buildah_cmd[@]}" copy --quiet --chown 65532:65532 "$ctr" "$rootfs/home/" /home/ >/dev/null
    "${buildah_cmd[@]}" config \
      --os linux --arch amd64 \
      --user 65532:65532 \
      --workingdir /home/nonroot \
      --env HOME=/home/nonroot \
      --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
      "${image_env[@]}" \
      --entrypoint "[\"/usr/local/bin/$b\"]" \
      --cmd '["--help"]' \
      --label "org.opencontainers.image.title=$b" \
      --label "org.opencontainers.image.description=$description" \
      --label "org.opencontainers.image.source=$source" \
      --label "org.opencontainers.image.version=$version" \
      --label "org.opencontainers.image.revision=$revision" \
      --label "org.opencontainers.image.licenses=Apache-2.0" \
      --label "dev.openmodel.build-profile=$profile" \
      "$ctr"
    # --timestamp 0: the layer's files and the config carry no build time, so
    # the same inputs give the same layer digest.
    rm -f "$image.tmp"
    "${buildah_cmd[@]}" commit --quiet --format oci --disable-compression=false --timestamp 0 --rm \
      "$ctr" "oci-archive:$image.tmp:docker.io/openmodel/$b:$version$suffix" >/dev/null
    trap - EXIT
    # The image also stays in buildah's store otherwise; the archive is the product.
    "${buildah_cmd[@]}" rmi --all --force >/dev/null 2>&1 || true
    mv -f "$image.tmp" "$image"
    echo "$stamp" >"$stamp_file"
  fi
  uncompressed=$(du -sb --apparent-size "$out/rootfs/$name" 2>/dev/null | cut -f1 || echo 0)
  summary+=("$(printf '  %-22s %10s compressed (%s), %s unpacked' "$name" "$(human "$(stat -c %s "$image")")" \
    "${image#"$root"/}" "$(human "${uncompressed:-0}")")")
done

echo "build-images: images ($profile binaries, version $version, revision $revision):"
printf '%s\n' "${summary[@]}"
