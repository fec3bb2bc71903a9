#!/usr/bin/env bash
# Checks and installs what OpenModel needs to build and test. Idempotent:
# run it as often as you like. scripts/test.sh, scripts/demo.sh and
# scripts/demo-ledger.sh run it first.
#
# Checks for a Rust toolchain with rustfmt and clippy (edition 2024, Rust
# 1.90 or newer) and python3; installs shellcheck (Debian package, for
# scripts/lint-shell.sh) when it is missing and this runs as root.
#
# Rust's target/: when the clone has none yet, it becomes a link to
# $OPENMODEL_CACHE/cargo-target/<hash of `rustc -vV`> in the per-user cache
# (scripts/cache-env.sh; default ~/.cache/openmodel), so that the build of
# the third-party crates is reused by every clone on this machine (cargo
# follows the link and locks the folder while it builds). A target/ that is
# a real folder is left alone (remove it to switch to the shared one); a link
# made here is moved to the folder of the current Rust when Rust changes, and
# the folder is made again when it was removed. Nothing is done when
# CARGO_TARGET_DIR is set. The other scripts put their downloads and builds
# in the same cache (docs/testing.md, "The caches").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/cache-env.sh
. scripts/cache-env.sh
mkdir -p .cache

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "setup: '$1' is missing. $2" >&2
    exit 1
  fi
}

need cargo "Install Rust with rustup (https://rustup.rs), then rerun scripts/setup.sh."
need python3 "Install Python 3 (e.g. apt-get install python3)."
cargo fmt --version >/dev/null 2>&1 || { echo "setup: rustfmt is missing: rustup component add rustfmt" >&2; exit 1; }
cargo clippy --version >/dev/null 2>&1 || { echo "setup: clippy is missing: rustup component add clippy" >&2; exit 1; }

rust_minor=$(rustc --version | sed -E 's/rustc 1\.([0-9]+).*/\1/')
if [ "$rust_minor" -lt 90 ]; then
  echo "setup: $(rustc --version) is too old; OpenModel needs Rust 1.90 or newer (rustup update stable)." >&2
  exit 1
fi

# The shell linter (shellcheck) for scripts/lint-shell.sh, a step of scripts/test.sh.
if ! command -v shellcheck >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing shellcheck (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
  else
    echo "setup: warning: 'shellcheck' is missing and this is not root with apt-get, so it is not installed; scripts/lint-shell.sh (and so scripts/test.sh) will fail until it is there: sudo apt-get install shellcheck" >&2
  fi
fi

# Rust's target/ in the per-user cache (see the head of this file).
target_note=
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  target_note="CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
else
  target_dest="$OPENMODEL_CACHE/cargo-target/$(rustc -vV | cache_key)"
  if [ -L target ]; then
    case "$(readlink target)" in
      # A link into any cargo-target/ folder was made here (perhaps with
      # another OPENMODEL_CACHE): pointed at this one.
      */cargo-target/*)
        mkdir -p "$target_dest"
        cache_link "$root/target" "$target_dest"
        target_note="target -> $target_dest"
        ;;
      *) target_note="target is a link to $(readlink target), not made here; left alone" ;;
    esac
  elif [ -e target ]; then
    target_note="target/ is a folder in this clone, left alone (remove it to share $target_dest with other clones)"
  else
    mkdir -p "$target_dest"
    cache_link "$root/target" "$target_dest"
    target_note="target -> $target_dest (new link)"
  fi
fi

# Test vectors shared by the team live beside the checkout (../shared/testdata)
# unless OPENMODEL_TESTDATA points elsewhere; the vector tests fail with this
# hint if they are missing.
testdata="${OPENMODEL_TESTDATA:-../shared/testdata}"
if [ ! -d "$testdata/merkle-vectors" ]; then
  echo "setup: warning: test vectors not found at $testdata; set OPENMODEL_TESTDATA (the vector tests will fail)." >&2
fi
echo "setup: ok ($(rustc --version), $(python3 --version)); $target_note"
