#!/usr/bin/env bash
# Installs what scripts/build-images.sh and the image tests need, from Debian
# packages: buildah (writes the images, no daemon), runc (runs them in the
# test), binutils (strip) and ca-certificates. Idempotent: does nothing when
# they are all there. Needs root for apt-get; otherwise says what to install.
set -euo pipefail

# versions: buildah's and runc's versions (runc's first line only).
versions() {
  local runc_version
  runc_version=$(runc --version)
  echo "image-tools: buildah $(buildah --version | awk '{print $3}'), ${runc_version%%$'\n'*}"
}

missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v strip >/dev/null 2>&1 || missing+=(binutils)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)

if [ ${#missing[@]} -eq 0 ]; then
  versions
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "image-tools: missing ${missing[*]}; install them (Debian: sudo apt-get install -y ${missing[*]}) and rerun" >&2
  exit 1
fi
echo "image-tools: installing ${missing[*]} with apt-get"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
versions
