#!/bin/sh
# CI stage for the SD-card image (issue 5): build it twice and compare SHA-256 (diffoscope on a
# difference), verify it against the board file, boot it under QEMU -M virt and -M raspi3b with a preseed
# until XMPP answers, boot it once more without a preseed until the setup wizard answers, three times with
# Raspberry Pi Imager's customisation, and print how long each part took. Needs root (mmdebstrap, chroot, binfmt).
#
# HEARTH_CLIENT_TEST: command run against each booted image once XMPP is ready; it gets HEARTH_XMPP_PORT,
#   HEARTH_DOMAIN, HEARTH_ADMIN, HEARTH_ADMIN_PASSWORD. Default: the slixmpp client test
#   tests/peers/boot_client.py (admin login, in-band registration of a second account, a message each way)
#   with the venv scripts/install-test-deps.sh makes. Set it to "" to only wait for XMPP.
# HEARTH_CACHE: the build starts from an EMPTY cache (a fresh temporary directory, removed at the end), so a
#   stale lock or a missing install step turns CI red instead of hiding behind a warm cache: every locked
#   package is fetched by pool path and the tools chroot is rebuilt. HEARTH_IMAGE_CACHE=DIR keeps one instead.
# HEARTH_TIMINGS: file that gets one "stage seconds" line per stage (scripts/test.sh prints them as a table).
# HEARTH_IMAGE_MACHINES: QEMU machines to boot with the test preseed (default "virt raspi3b").
# HEARTH_IMAGE_WIZARD: 1 (default) also boots -M virt without a preseed and waits for the setup wizard.
# HEARTH_IMAGE_IMAGER: 1 (default) also boots -M virt three times with cards Raspberry Pi Imager customised.
set -eu
cd "$(dirname "$0")/.."
start=$(date +%s)
stamp() { echo "$(( $(date +%s) - $1 ))"; }

client_default="$PWD/target/venv/bin/python $PWD/tests/peers/boot_client.py"
HEARTH_CLIENT_TEST=${HEARTH_CLIENT_TEST-$client_default}
if [ "$HEARTH_CLIENT_TEST" = "$client_default" ] && ! target/venv/bin/python -c 'import slixmpp' 2>/dev/null; then
    echo "test-image: the client test needs slixmpp in target/venv: run scripts/install-test-deps.sh" >&2
    echo "  (or HEARTH_CLIENT_TEST= $0 to boot without it)" >&2
    exit 1
fi

# The debug build: scripts/test.sh has just built it, and the heavy lifting is done by mmdebstrap, mke2fs,
# xz and QEMU, not by this binary (dependencies are optimised in debug builds too, see Cargo.toml).
# HEARTH_IMAGE_BUILT=1: scripts/test.sh has built it already and runs `cargo test` alongside (which holds
# cargo's lock on target/debug while it compiles).
[ "${HEARTH_IMAGE_BUILT:-0}" = 1 ] || cargo build -p hearth-image
bin=target/debug/hearth-image

timing() { [ -z "${HEARTH_TIMINGS:-}" ] || echo "$1 $2" >> "$HEARTH_TIMINGS"; }
if [ -n "${HEARTH_IMAGE_CACHE:-}" ]; then
    HEARTH_CACHE=$HEARTH_IMAGE_CACHE
else
    HEARTH_CACHE=$(mktemp -d /var/tmp/hearth-image-cache.XXXXXX)
    # A failed mmdebstrap may leave mounts below it: unmount, and never cross into another filesystem.
    trap 'findmnt -rn -o TARGET | grep "^$HEARTH_CACHE/" | sort -r | xargs -r umount -l; rm -rf --one-file-system "$HEARTH_CACHE"' EXIT
fi
export HEARTH_CACHE
echo "test-image: cache $HEARTH_CACHE ($(du -sm "$HEARTH_CACHE" | cut -f1) MiB at start)"

# --verify: the second build rebuilds from the first one's package bundle in its own empty cache, with
# every network source pointing at a closed port, and must give the same .img SHA-256.
t=$(date +%s)
"$bin" build --verify
build_s=$(stamp "$t")
timing "image-build+offline-rebuild" "$build_s"

img=$(ls out/hearth-*-rpi-arm64.img.xz | head -n 1)
t=$(date +%s)
"$bin" verify "$img"
verify_s=$(stamp "$t")
timing "image-verify" "$verify_s"

boots=""
for machine in ${HEARTH_IMAGE_MACHINES:-virt raspi3b}; do
    t=$(date +%s)
    if [ -n "${HEARTH_CLIENT_TEST:-}" ]; then
        "$bin" boot-test "$img" --machine "$machine" --hook "$HEARTH_CLIENT_TEST"
    else
        "$bin" boot-test "$img" --machine "$machine"
    fi
    boots="$boots boot-test-$machine=$(stamp "$t")s"
    timing "boot-test-$machine" "$(stamp "$t")"
done

# The image as downloaded, without a preseed: first boot makes the setup code and the wizard answers.
if [ "${HEARTH_IMAGE_WIZARD:-1}" = 1 ]; then
    t=$(date +%s)
    "$bin" boot-test "$img" --machine virt --no-preseed --output out/boot-test-virt-no-preseed
    boots="$boots boot-test-virt-no-preseed=$(stamp "$t")s"
    timing "boot-test-virt-no-preseed" "$(stamp "$t")"
fi

# Cards customised by Raspberry Pi Imager (issue 16), the card's whole cmdline.txt passed to the kernel:
# firstrun.sh with a line Imager never writes (Imager's settings applied, the line named and not run, one reboot,
# cmdline.txt restored, the wizard answers); cloud-init's files (the same settings); cloud-init with a
# cut-short user-data beside hearth-setup.toml (the preseed wins and says so; XMPP answers).
if [ "${HEARTH_IMAGE_IMAGER:-1}" = 1 ]; then
    for run in "firstrun --imager-malformed" "cloudinit" "cloudinit --imager-with-preseed --imager-malformed"; do
        name=boot-test-virt-imager-$(echo "$run" | tr -d ' -' | sed 's/imager//g')
        t=$(date +%s)
        # shellcheck disable=SC2086 # $run is flags
        "$bin" boot-test "$img" --machine virt --imager $run --output "out/$name"
        boots="$boots $name=$(stamp "$t")s"
        timing "$name" "$(stamp "$t")"
    done
fi

echo "test-image timings: build+rebuild+compare=${build_s}s verify=${verify_s}s${boots} total=$(stamp "$start")s"
echo "image: $img ($(du -m "$img" | cut -f1) MiB; $(du -m "${img%.xz}" | cut -f1) MiB unpacked)"
cat out/SHA256SUMS
bundle=$(ls out/hearth-*-debs.tar | head -n 1)
echo "$(sha256sum "$bundle" | cut -d' ' -f1)  $(basename "$bundle") ($(du -m "$bundle" | cut -f1) MiB)"
