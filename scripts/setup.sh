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

# Disk: the shared target folder only grows (a changed profile or dependency
# adds new artifacts beside the old), and a build that fills the disk fails
# half-way ("No space left on device"). A cold run of scripts/test.sh
# leaves 5.4 GiB there (2026-12-02, without incremental compilation); when
# the folder has grown past twice $target_budget_gib GiB, or the disk it is
# on has less than $min_free_gib GiB free, the target folders of other Rust
# versions go first, then this one (the next build is cold).
# OPENMODEL_TARGET_BUDGET_GIB and OPENMODEL_MIN_FREE_GIB change the bounds.
target_budget_gib=${OPENMODEL_TARGET_BUDGET_GIB:-8}
min_free_gib=${OPENMODEL_MIN_FREE_GIB:-10}
gib_free() { df -Pk "$1" | awk 'NR == 2 { print int($4 / 1048576) }'; }
gib_used() { du -sk "$1" 2>/dev/null | awk '{ print int($1 / 1048576) }'; }
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "${target_dest:-}" ]; then
  for other in "$OPENMODEL_CACHE"/cargo-target/*; do
    if [ "$other" != "$target_dest" ] && [ -d "$other" ] &&
      [ "$(gib_free "$target_dest")" -lt "$min_free_gib" ]; then
      echo "setup: less than $min_free_gib GiB free: removing the build of another Rust version, $other" >&2
      rm -rf "$other"
    fi
  done
  used=$(gib_used "$target_dest")
  if [ "$used" -gt $((2 * target_budget_gib)) ] || [ "$(gib_free "$target_dest")" -lt "$min_free_gib" ]; then
    echo "setup: the target folder holds $used GiB with $(gib_free "$target_dest") GiB free on its disk: removing it (stale builds; this build is cold)" >&2
    rm -rf "$target_dest"
    mkdir -p "$target_dest"
  fi
  target_note="$target_note; $(gib_free "$target_dest") GiB free"
fi

# The workspace's own crates bake their clone's path in (env!("CARGO_MANIFEST_DIR"),
# by which the tests find their fixtures), and cargo judges them fresh by the
# files' times, not their paths: a clone whose files are older than another
# clone's build into the same target folder would run that clone's test
# binaries, looking for fixtures under its path. So when another clone built
# here last, the workspace's crates are cleaned (dependencies kept).
target_used=$(cargo metadata --no-deps --format-version 1 --locked 2>/dev/null |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' || true)
if [ -n "$target_used" ] && [ -d "$target_used" ]; then
  clone_stamp="$target_used/.openmodel-clone"
  if [ -f "$clone_stamp" ] && [ "$(cat "$clone_stamp")" != "$root" ]; then
    echo "setup: the target folder was last built from $(cat "$clone_stamp"): cleaning this workspace's crates there (cargo clean --workspace; dependencies kept)" >&2
    cargo clean --workspace --locked --quiet
  fi
  echo "$root" >"$clone_stamp"
fi

# Test vectors shared by the team live beside the checkout (../shared/testdata)
# unless OPENMODEL_TESTDATA points elsewhere; the vector tests fail with this
# hint if they are missing.
testdata="${OPENMODEL_TESTDATA:-../shared/testdata}"
if [ ! -d "$testdata/merkle-vectors" ]; then
  echo "setup: warning: test vectors not found at $testdata; set OPENMODEL_TESTDATA (the vector tests will fail)." >&2
fi
echo "setup: ok ($(rustc --version), $(python3 --version)); $target_note"
