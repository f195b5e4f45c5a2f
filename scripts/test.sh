#!/usr/bin/env bash
# Runs every Hearth test on a fresh Debian 12 machine: installs the real peers the tests talk to
# (slixmpp in a venv under target/, Debian packages as needed), then the Rust test suites.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
bash scripts/install-test-deps.sh

# Build the binaries first so end-to-end tests run the daemon as a user would.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
