//! The root filesystem: mmdebstrap (arm64 under qemu-user) from the local repository of locked packages,
//! then `image/hooks/customize.sh` adds the overlay, our binaries and units, users, and removes
//! everything that would differ between two builds.

use std::path::Path;
use std::process::Command;

use crate::binaries::Binaries;
use crate::build::Ctx;
use crate::error::{Context, Error, Result};
use crate::lock::Lock;
use crate::progress::Step;
use crate::run::{remove_tree, run};

pub fn build(ctx: &Ctx, lock: &Lock, repo_dir: &Path, bins: &Binaries, step: &Step) -> Result<()> {
    let rootfs = ctx.work.join("rootfs");
    step.status("removing the previous root filesystem");
    remove_tree(&rootfs, &step.log)?;
    let image_dir = ctx.repo.join("image");
    for unit in &bins.units {
        if !ctx.repo.join(unit).is_file() {
            return Err(Error::new(format!(
                "unit file {unit} (named in board-configs/{}.toml) does not exist",
                ctx.board.name
            ))
            .hint("unit paths in [[image.binary]] units are relative to the repository root"));
        }
    }
    // Names only: the local repository holds exactly one (the locked) version of each. The leading comma
    // stops mmdebstrap from reading versions such as 1.69~deb13u1 as apt patterns.
    let include: Vec<String> = lock.packages.iter().map(|p| p.name.clone()).collect();
    let debian = &ctx.spec.debian;
    let repo_view = RepoView::new(repo_dir)?;
    step.status(&format!(
        "mmdebstrap {} {} ({} packages; ~13 min under qemu-user)",
        debian.suite,
        ctx.spec.architecture,
        include.len()
    ));
    run(
        Command::new("mmdebstrap")
            .env("SOURCE_DATE_EPOCH", ctx.epoch.to_string())
            .env("HEARTH_HOSTNAME", &ctx.spec.hostname)
            .env("HEARTH_IMAGE_MIRROR", debian.image_mirror.as_deref().unwrap_or(""))
            .env(
                "HEARTH_IMAGE_SECURITY",
                debian.image_security_mirror.as_deref().unwrap_or(""),
            )
            .env("HEARTH_SUITE", &debian.suite)
            .env("HEARTH_EXTRA_SUITES", debian.extra_suites.join(" "))
            .env("HEARTH_COMPONENTS", debian.components.join(" "))
            .env("HEARTH_OVERLAY", image_dir.join("overlay"))
            .env("HEARTH_UNIT_DIR", ctx.repo)
            .env("HEARTH_UNITS", bins.units.join(" "))
            .env("HEARTH_BIN", &bins.dir)
            .args(["--mode=root", "--variant=essential"])
            .arg(format!("--architectures={}", ctx.spec.architecture))
            .arg(format!("--components={}", debian.components.join(",")))
            // No mirror is named below, so mmdebstrap writes its default sources (Debian's, for the image:
            // customize.sh takes the URIs from them). The host's apt trust must not change them.
            .arg("--skip=check/signed-by")
            // Before file-mirror-automount (hooks run in order): keep the defaults aside and install from
            // the local repository of locked packages only.
            .arg(format!(
                "--setup-hook=mv \"$1/etc/apt/sources.list\" \"$1/etc/apt/sources.list.hearth-default\" && \
                 echo 'deb [trusted=yes] file://{} ./' > \"$1/etc/apt/sources.list\"",
                repo_view.path.display()
            ))
            .arg("--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount")
            // Debian's raspi-firmware and our overlay's /etc/default file must not stop dpkg at a prompt.
            .args(["--dpkgopt=force-confold", "--dpkgopt=force-confdef"])
            .arg("--aptopt=Acquire::Languages \"none\"")
            .arg(format!("--include=,{}", include.join(",")))
            // Before the kernel's initramfs is made: tell initramfs-tools the root's type (see the file).
            .arg(format!(
                "--essential-hook=mkdir -p \"$1/etc/initramfs-tools/conf.d\" && cp {} \"$1/etc/initramfs-tools/conf.d/hearth\"",
                image_dir.join("overlay/etc/initramfs-tools/conf.d/hearth").display()
            ))
            .arg(format!(
                "--customize-hook={} \"$1\"",
                image_dir.join("hooks/customize.sh").display()
            ))
            .arg(&debian.suite)
            .arg(&rootfs),
        &step.log,
    )?;
    drop(repo_view);
    // mmdebstrap's own cleanup runs after the customize hook and leaves apt's binary caches behind; they
    // differ between two builds (found by comparing two builds). apt rebuilds them when it needs them.
    for cache in [
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
    ] {
        let path = rootfs.join(cache);
        if path.exists() {
            std::fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The local repository as mmdebstrap sees it: a symlink under /tmp. file-mirror-automount bind-mounts a
/// `file:` mirror at the same path inside the chroot and leaves the directories it made there; under /tmp
/// they go with the image's emptied /tmp (customize.sh), while a path in the cache would stay in the image
/// and differ with the cache's location (found by rebuilding from a bundle in another cache).
struct RepoView {
    path: std::path::PathBuf,
}

impl RepoView {
    fn new(repo_dir: &Path) -> Result<RepoView> {
        let path = Path::new("/tmp").join(format!("hearth-image-repo.{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(repo_dir, &path)
            .ctx(|| format!("linking {} to {}", path.display(), repo_dir.display()))?;
        Ok(RepoView { path })
    }
}

impl Drop for RepoView {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
