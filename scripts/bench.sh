#!/bin/sh
# The side-by-side benchmark (bench/README.md) in one command, as root, on a machine nothing else is using:
# builds hearthd for musl (the build that ships, with musl's malloc), for musl with mimalloc (the alternative
# allocator the choice is made against) and for glibc, then runs every scenario against those three, Prosody
# and ejabberd (Debian trixie packages in a chroot it makes on first use), and writes bench/REPORT.md, the SVG
# charts and bench/results.json. About 45 minutes on a quiet 2-core machine.
#
# HEARTH_BENCH_IMAGE=out/hearth-<version>-rpi-arm64.img.xz (from scripts/build-image.sh) adds the scenario
# inside the booted image under QEMU. Extra arguments go to hearth-bench (`--help` lists them), e.g.
# `scripts/bench.sh --smoke --out /tmp/smoke` for a quick check that everything still starts.
set -eu
cd "$(dirname "$0")/.."

musl=x86_64-unknown-linux-musl
if ! command -v musl-gcc >/dev/null; then
    echo "bench: musl-gcc is missing (SQLite and ring are compiled for musl with it): apt-get install musl-tools" >&2
    exit 1
fi
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$musl"; then
    rustup target add "$musl"
fi

echo "== building hearth-bench and hearthd (glibc) =="
cargo build --release -p hearthd -p hearth-bench
echo "== building hearthd for $musl (the build that ships) =="
cargo build --release -p hearthd --bin hearthd --target "$musl"
bins=target/bench-bins
mkdir -p "$bins"
# Copies, so a build during the run cannot change what is measured.
cp target/release/hearth-bench "$bins/hearth-bench"
cp target/release/hearthd "$bins/hearthd-glibc"
cp "target/$musl/release/hearthd" "$bins/hearthd-musl"
echo "== building hearthd for $musl with mimalloc (the alternative allocator) =="
cargo build --release -p hearthd --bin hearthd --target "$musl" --features mimalloc
cp "target/$musl/release/hearthd" "$bins/hearthd-musl-mimalloc"

set -- --hearthd "musl=$bins/hearthd-musl" \
    --hearthd "musl-mimalloc=$bins/hearthd-musl-mimalloc" \
    --hearthd "glibc=$bins/hearthd-glibc" "$@"
if [ -n "${HEARTH_BENCH_IMAGE:-}" ]; then
    echo "== building hearth-image (it boots the image for the guest scenario) =="
    cargo build --release -p hearth-image
    cp target/release/hearth-image "$bins/hearth-image"
    set -- --guest-image "$HEARTH_BENCH_IMAGE" "$@"
fi
echo "== hearth-bench $* =="
exec "$bins/hearth-bench" "$@"
