//! Host setup: the Debian packages, binfmt registration and Rust target the build needs.
//!
//! Everything that must be bit-identical (filesystems, FAT, compression) runs inside a trixie tools chroot
//! (see `tools.rs`), so the host's own versions only matter for fetching, debootstrapping and QEMU.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};
use crate::progress::Step;
use crate::run::{have, output, run};

/// (program or file that must exist, Debian package providing it)
const NEEDED: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    (
        "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
        "qemu-user-static",
    ),
    ("qemu-system-aarch64", "qemu-system-arm"),
    // fetch.rs: locked packages by pool path
    ("curl", "curl"),
    // The boot test makes a throwaway key and logs in to the guest with it.
    ("ssh-keygen", "openssh-client"),
    ("ssh", "openssh-client"),
    ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ("apt-ftparchive", "apt-utils"),
    ("diffoscope", "diffoscope-minimal"),
    ("mcopy", "mtools"),
    ("debugfs", "e2fsprogs"),
    ("xz", "xz-utils"),
    ("unshare", "util-linux"),
    (
        "/usr/share/keyrings/debian-archive-trixie-stable.gpg",
        "debian-archive-keyring",
    ),
    (
        "/usr/share/mmdebstrap/hooks/file-mirror-automount/setup00.sh",
        "mmdebstrap",
    ),
];

pub const RUST_TARGET: &str = "aarch64-unknown-linux-musl";

fn present(what: &str) -> bool {
    if what.starts_with('/') {
        Path::new(what).exists()
    } else {
        have(what)
    }
}

pub fn is_root() -> bool {
    // SAFETY-free check: /proc/self/status has "Uid:\treal\teffective..."
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Installs what is missing (as root), registers binfmt for arm64, adds the Rust target.
pub fn setup(step: &Step) -> Result<()> {
    let missing: Vec<&str> = {
        let mut m: Vec<&str> = NEEDED
            .iter()
            .filter(|(w, _)| !present(w))
            .map(|(_, p)| *p)
            .collect();
        m.dedup();
        m
    };
    if !missing.is_empty() {
        if !is_root() {
            return Err(
                Error::new(format!("missing build tools: {}", missing.join(" "))).hint(format!(
                "run as root (the build needs root for mmdebstrap and chroot), or install them as root: \
                 apt-get install --no-install-recommends {}",
                missing.join(" ")
            )),
            );
        }
        step.status(&format!("apt-get install {}", missing.join(" ")));
        run(Command::new("apt-get").arg("update"), &step.log)?;
        run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing),
            &step.log,
        )?;
    }
    if !is_root() {
        return Err(Error::new("hearth-image build must run as root")
            .hint("mmdebstrap --mode=root, chroot and the binfmt registration need it: run scripts/build-image.sh as root"));
    }
    register_binfmt(step)?;
    rust_target(step)
}

/// qemu-user for arm64 maintainer scripts. Without systemd-binfmt (containers), register by hand.
pub fn register_binfmt(step: &Step) -> Result<()> {
    let entry = Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64");
    if entry.exists() {
        let flags = std::fs::read_to_string(entry).unwrap_or_default();
        if flags.contains("enabled") {
            return Ok(());
        }
    }
    step.status("registering qemu-aarch64 with binfmt_misc");
    if !Path::new("/proc/sys/fs/binfmt_misc/register").exists() {
        run(
            Command::new("mount").args([
                "-t",
                "binfmt_misc",
                "binfmt_misc",
                "/proc/sys/fs/binfmt_misc",
            ]),
            &step.log,
        )?;
    }
    let conf = std::fs::read_to_string("/usr/lib/binfmt.d/qemu-aarch64.conf").map_err(|e| {
        Error::new(format!("reading /usr/lib/binfmt.d/qemu-aarch64.conf: {e}"))
            .hint("apt-get install qemu-user-static")
    })?;
    let line = conf
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    if !entry.exists() {
        std::fs::write("/proc/sys/fs/binfmt_misc/register", line).map_err(|e| {
            Error::new(format!("registering qemu-aarch64 in binfmt_misc: {e}"))
                .hint("the kernel needs binfmt_misc; in a container, register it on the host")
        })?;
    } else {
        std::fs::write(entry, "1")
            .map_err(|e| Error::new(format!("enabling qemu-aarch64 binfmt: {e}")))?;
    }
    Ok(())
}

fn rust_target(step: &Step) -> Result<()> {
    let installed = output(
        Command::new("rustup").args(["target", "list", "--installed"]),
        &step.log,
    )?;
    if installed.lines().any(|l| l.trim() == RUST_TARGET) {
        return Ok(());
    }
    step.status(&format!("rustup target add {RUST_TARGET}"));
    run(
        Command::new("rustup").args(["target", "add", RUST_TARGET]),
        &step.log,
    )
}
