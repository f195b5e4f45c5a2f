#!/usr/bin/env bash
# Runs every Hearth test on a fresh Debian 12 machine: installs the real peers the tests talk to
# (slixmpp in a venv under target/, Debian packages as needed), then the Rust test suites, and the image
# stage (scripts/test-image.sh) alongside them. Prints a table of stage timings at the end; exits non-zero
# if any stage failed.
#
# The image stage starts right after `cargo build`, in the background, its output in out/test-image.log
# (printed at the end): its root filesystem step is dpkg under qemu-user, which keeps about one core busy,
# so on two cores it overlaps well with the Rust tests. HEARTH_SKIP_IMAGE=1 skips it, e.g. while iterating
# on Rust; it needs root (mmdebstrap, chroot, binfmt).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
start=$(date +%s)
timings=()
failed=()
# stage NAME COMMAND...: runs it, records its time, remembers a failure and carries on.
stage() {
    local name=$1 t rc=0
    shift
    t=$(date +%s)
    "$@" || rc=$?
    timings+=("$name $(($(date +%s) - t)) $rc")
    [ "$rc" -eq 0 ] || failed+=("$name")
    return 0
}

stage "install test deps" bash scripts/install-test-deps.sh

# Build the binaries first so end-to-end tests run the daemon as a user would (hearth-image among them,
# which the image stage uses).
stage "cargo build" cargo build --workspace --bins

mkdir -p out
image_log=out/test-image.log
image_timings=out/test-image.timings
image_pid=""
rm -f "$image_timings"
if [ "${HEARTH_SKIP_IMAGE:-0}" = 1 ]; then
    echo "image stage skipped (HEARTH_SKIP_IMAGE=1)" >&2
elif [ "$(id -u)" -ne 0 ]; then
    echo "image stage skipped: it needs root (mmdebstrap, chroot, binfmt); as root: scripts/test-image.sh" >&2
else
    echo "image stage started in the background (log: $image_log)"
    HEARTH_TIMINGS=$image_timings HEARTH_IMAGE_BUILT=1 sh scripts/test-image.sh > "$image_log" 2>&1 &
    image_pid=$!
fi

# The benchmark's smoke run (bench/README.md): hearthd, Prosody and ejabberd (trixie packages in a chroot
# the tool makes once under /var/cache/hearth-bench) through every scenario with small counts, so the tool
# keeps working; its figures mean nothing. Root (chroot, cgroup), in the background like the image stage,
# a few minutes; HEARTH_SKIP_BENCH=1 skips it.
bench_log=out/bench-smoke.log
bench_pid=""
if [ "${HEARTH_SKIP_BENCH:-0}" = 1 ]; then
    echo "bench smoke skipped (HEARTH_SKIP_BENCH=1)" >&2
elif [ "$(id -u)" -ne 0 ]; then
    echo "bench smoke skipped: it needs root (mmdebstrap, chroot, cgroup); as root: target/debug/hearth-bench --smoke" >&2
else
    echo "bench smoke started in the background (log: $bench_log)"
    target/debug/hearth-bench --smoke --out out/bench-smoke > "$bench_log" 2>&1 &
    bench_pid=$!
    bench_start=$(date +%s)
fi

rm -f target/compliance-hearthd.txt  # written afresh by tests/tests/compliance.rs
stage "cargo test" cargo test --workspace --no-fail-fast

if [ -n "$image_pid" ]; then
    t=$(date +%s)
    rc=0
    wait "$image_pid" || rc=$?
    echo
    echo "=== image stage (out/test-image.log) ==="
    cat "$image_log"
    timings+=("image stage, waited for after cargo test $(($(date +%s) - t)) $rc")
    if [ -f "$image_timings" ]; then
        while read -r name secs; do timings+=("  $name $secs 0"); done < "$image_timings"
    fi
    [ "$rc" -eq 0 ] || failed+=("image stage")
fi

if [ -n "$bench_pid" ]; then
    rc=0
    wait "$bench_pid" || rc=$?
    echo
    echo "=== bench smoke (out/bench-smoke.log, report out/bench-smoke/REPORT.md) ==="
    tail -n 20 "$bench_log"
    timings+=("bench smoke (background, whole run) $(($(date +%s) - bench_start)) $rc")
    [ "$rc" -eq 0 ] || failed+=("bench smoke")
fi

# What the XEP-0479 probe (tests/tests/compliance.rs) found, one line per requirement.
if [ -f target/compliance-hearthd.txt ]; then
    echo
    echo "=== XEP-0479 Advanced Server (Core, IM, Mobile): hearthd ==="
    cat target/compliance-hearthd.txt
fi

echo
echo "=== stage timings ==="
for row in "${timings[@]}"; do
    rc=${row##* }
    rest=${row% *}
    secs=${rest##* }
    name=${rest% *}
    printf '%-48s %4dm%02ds  %s\n' "$name" $((secs / 60)) $((secs % 60)) "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED ($rc)")"
done
total=$(($(date +%s) - start))
printf '%-48s %4dm%02ds\n' "total (wall clock)" $((total / 60)) $((total % 60))

if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
