#!/bin/sh
# mmdebstrap customize hook for Hearth's root filesystem. $1 is the root directory.
# Called by hearth-image (rootfs.rs) with HEARTH_* variables set; runs after all packages are installed.
set -eu
root="$1"

# Host files mmdebstrap copies in for debootstrap compatibility: never ship the build host's.
rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
echo "$HEARTH_HOSTNAME" > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$HEARTH_HOSTNAME" > "$root/etc/hosts"

# The build's local mirror is replaced by Debian's, for updates on the device: the URIs mmdebstrap's
# defaults name (rootfs.rs kept them aside), whatever mirror the build fetched from, unless the board sets
# image_mirror / image_security_mirror.
defaults="$root/etc/apt/sources.list.hearth-default"
uri_of() { sed -e 's/\[[^]]*\] //' "$defaults" | awk -v s="$1" '$1 == "deb" && $3 == s { print $2; exit }'; }
mirror=${HEARTH_IMAGE_MIRROR:-$(uri_of "$HEARTH_SUITE")}
security=${HEARTH_IMAGE_SECURITY:-$(uri_of "$HEARTH_SUITE-security")}
if [ -z "$mirror" ] || [ -z "$security" ]; then
    echo "customize.sh: no archive or security URI in mmdebstrap's default sources:" >&2
    cat "$defaults" >&2
    exit 1
fi
rm -f "$root/etc/apt/sources.list" "$defaults"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $HEARTH_SUITE $HEARTH_SUITE-updates${HEARTH_EXTRA_SUITES:+ $HEARTH_EXTRA_SUITES}
Components: $HEARTH_COMPONENTS
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $HEARTH_SUITE-security
Components: $HEARTH_COMPONENTS
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# Our files: configuration, first-boot and self-test scripts, sysusers/tmpfiles.
cp -dR --preserve=mode "$HEARTH_OVERLAY/." "$root/"
# ssh-authorized-keys must be root's and not writable by others, or sshd will not run it.
chmod 0755 "$root/usr/lib/hearth/firstboot" "$root/usr/lib/hearth/selftest" "$root/usr/lib/hearth/ssh-authorized-keys" \
    "$root/etc/kernel/postinst.d/z51-hearth-dtbs"

# Device trees for the boot partition. raspi-firmware's own hook looks for them where kernels before 6.18
# put them (/usr/lib/linux-image-VERSION); newer kernel packages keep them in /usr/lib/modules/VERSION/dtb.
# /etc/kernel/postinst.d/z51-hearth-dtbs copies them on every kernel update on the device; here they are
# copied directly, because inside mmdebstrap's chroot the hook cannot be sure it is not on a device.
for dtbs in "$root"/usr/lib/modules/*/dtb/broadcom; do
    [ -d "$dtbs" ] || continue
    cp "$dtbs"/bcm*.dtb "$root/boot/firmware/"
done

# Our binaries and their units.
for exe in "$HEARTH_BIN"/*; do
    [ -e "$exe" ] || continue
    install -m 0755 "$exe" "$root/usr/bin/$(basename "$exe")"
done
# HEARTH_UNITS are paths from the repository root ($HEARTH_UNIT_DIR): each crate ships its own units.
units=""
for unit in $HEARTH_UNITS; do
    install -m 0644 "$HEARTH_UNIT_DIR/$unit" "$root/usr/lib/systemd/system/$(basename "$unit")"
    units="$units $(basename "$unit")"
done

# System users and groups (hearth, hearth-web, hearth-acme, hearth-admin) from sysusers.d, now, so that
# file ownership is fixed in the image rather than decided on first boot.
chroot "$root" systemd-sysusers
chroot "$root" systemd-tmpfiles --create --exclude-prefix=/dev --exclude-prefix=/proc --exclude-prefix=/sys \
    --exclude-prefix=/run --exclude-prefix=/tmp /usr/lib/tmpfiles.d/hearth.conf

# Services. hearthd waits for /etc/hearth/hearth.toml (written by the preseed or the wizard);
# hearthd-on-setup.path starts it when the wizard writes that file.
# ssh.service is enabled but starts only once the owner has a key (its drop-in); hearth-ssh-keys.path
# starts and stops it when the keys change.
enable="systemd-networkd.service systemd-resolved.service systemd-timesyncd.service ssh.service
        hearth-firstboot.service hearth-ssh-keys.path"
for unit in $units; do
    case "$unit" in *.timer|*.service|*.path) enable="$enable $unit" ;; esac
done
# A timer's service is started by the timer, not at boot.
for unit in $units; do
    case "$unit" in *.timer) enable=$(echo "$enable" | tr ' ' '\n' | grep -vx "${unit%.timer}.service" | tr '\n' ' ') ;; esac
done
chroot "$root" systemctl enable $enable
# Wi-Fi starts when the wlan0 device appears, not from multi-user.target: enabled there, a box without
# Wi-Fi (or QEMU) waits 90 s for the device before network.target, and so before hearthd and the wizard.
# Its drop-in skips it until hearth-setup.toml's [wifi] has written a configuration. The package's own
# D-Bus wpa_supplicant.service is not needed by systemd-networkd: off, to save the memory.
chroot "$root" systemctl disable wpa_supplicant.service
mkdir -p "$root/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants"
ln -sf /usr/lib/systemd/system/wpa_supplicant@.service \
    "$root/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service"

# Identity is made on first boot: machine-id (systemd does it while it reads "uninitialized") and SSH host keys.
echo uninitialized > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*

# A Pi has no clock: timesyncd advances the clock at boot to this file's time (clamped to SOURCE_DATE_EPOCH
# below) instead of starting from systemd's older built-in floor.
mkdir -p "$root/var/lib/systemd/timesync"
touch "$root/var/lib/systemd/timesync/clock"

# Leftovers with build-time clocks or host data.
rm -rf "$root"/var/log/apt/* "$root/var/log/dpkg.log" "$root/var/log/alternatives.log" "$root/var/log/bootstrap.log"
rm -f "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root/var/cache/ldconfig/aux-cache"
rm -rf "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/tmp/*
rm -f "$root/etc/initramfs-tools/conf.d/resume" "$root/var/lib/systemd/random-seed"
rm -f "$root/etc/ssh/sshd_config.d/.keep"

# Every time stamp clamped to SOURCE_DATE_EPOCH.
# mmdebstrap still has /proc, /sys and /dev mounted here: skip the mount points themselves (mke2fs -d
# clamps their times to SOURCE_DATE_EPOCH too).
find "$root" -xdev \( -path "$root/proc" -o -path "$root/sys" -o -path "$root/dev" \) -prune \
    -o -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"
