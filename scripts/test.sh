#!/usr/bin/env bash
# The one command that checks Skiff: installs what the tests need, builds every
# binary, then runs every crate's unit tests and the end-to-end suite (which
# starts real control planes and drives them with real kubectl and the Python
# client). Exits non-zero if anything fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> test: installing dependencies"
scripts/install-deps.sh

# The end-to-end tests run the binaries rather than linking the crates, and
# `cargo test` would not build another package's binaries for them.
echo "==> test: building all binaries (debug)"
cargo build --workspace --bins

echo "==> test: running unit and end-to-end tests"
# --no-fail-fast so one broken crate doesn't hide the state of the others.
cargo test --workspace --no-fail-fast "$@"
