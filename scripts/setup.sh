#!/usr/bin/env bash
# Checks and installs what OpenModel needs to build and test. Idempotent:
# run it as often as you like; anything downloaded is cached in .cache/
# (ignored by git).
#
# Today the ledger and CLI need only a Rust toolchain with rustfmt and
# clippy (edition 2024, Rust 1.90 or newer) and python3 for the demo's
# tampering step. Later issues add the Go-built control plane here.
set -euo pipefail
cd "$(dirname "$0")/.."
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

# Test vectors shared by the team live beside the checkout (../shared/testdata)
# unless OPENMODEL_TESTDATA points elsewhere; the vector tests fail with this
# hint if they are missing.
testdata="${OPENMODEL_TESTDATA:-../shared/testdata}"
if [ ! -d "$testdata/merkle-vectors" ]; then
  echo "setup: warning: test vectors not found at $testdata; set OPENMODEL_TESTDATA (the vector tests will fail)." >&2
fi
echo "setup: ok ($(rustc --version), $(python3 --version))"
