#!/bin/sh
# Builds Hearth's SD-card image: out/hearth-<version>-rpi-arm64.img.xz, SHA256SUMS, manifest.json.
# Needs root (mmdebstrap, chroot, binfmt). Arguments go to `hearth-image build`, e.g. --verify.
set -eu
cd "$(dirname "$0")/.."
cargo build --release -p hearth-image
exec target/release/hearth-image build "$@"
