//! The tools chroot: a native amd64 Debian trixie with the filesystem tools whose output must be
//! bit-identical (e2fsprogs >= 1.47.1 clamps times to SOURCE_DATE_EPOCH; bookworm's 1.47.0 does not).
//! Made once by mmdebstrap from its own lock file and kept in the cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt;
use crate::error::{Context, Error, Result};
use crate::fetch::Sources;
use crate::lock::Lock;
use crate::progress::Step;
use crate::run::{remove_tree, run};

pub const PACKAGES: &[&str] = &["e2fsprogs", "mtools", "dosfstools", "xz-utils"];
pub const LOCK_NAME: &str = "tools-amd64";

pub fn components() -> Vec<String> {
    vec!["main".to_string()]
}

pub fn packages() -> Vec<String> {
    PACKAGES.iter().map(|s| s.to_string()).collect()
}

pub struct Tools {
    root: PathBuf,
}

/// Creates (or reuses) the tools chroot for `lock`.
pub fn ensure(
    cache: &Path,
    lock: &Lock,
    sources: &Sources,
    epoch: u64,
    step: &Step,
) -> Result<Tools> {
    let root = cache.join("tools").join(lock.digest());
    if root.join(".hearth-complete").exists() {
        return Ok(Tools { root });
    }
    let repo = apt::local_repo(cache, lock, LOCK_NAME, sources, step)?;
    step.status("mmdebstrap tools chroot (amd64, native)");
    remove_tree(&root, &step.log)?;
    std::fs::create_dir_all(&root).ctx(|| format!("creating {}", root.display()))?;
    // Names only: the local repository holds exactly one (the locked) version of each. The leading comma
    // stops mmdebstrap from reading versions such as 1.69~deb13u1 as apt patterns.
    let include: Vec<String> = lock.packages.iter().map(|p| p.name.clone()).collect();
    let result = run(
        Command::new("mmdebstrap")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args([
                "--mode=root",
                "--variant=essential",
                "--architectures=amd64",
            ])
            .arg("--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount")
            .arg(format!("--include=,{}", include.join(",")))
            .arg("--customize-hook=mkdir -p \"$1/work\"")
            .arg(&lock.suite)
            .arg(&root)
            .arg(format!("deb [trusted=yes] file://{} ./", repo.display())),
        &step.log,
    );
    if let Err(e) = result {
        let _ = remove_tree(&root, &step.log);
        return Err(e);
    }
    std::fs::write(root.join(".hearth-complete"), "")
        .ctx(|| "marking tools chroot complete".into())?;
    Ok(Tools { root })
}

impl Tools {
    /// Runs `script` with `sh -eu` inside the chroot, with `dir` bind-mounted at /work (in a private mount
    /// namespace, so nothing stays mounted if we are killed).
    pub fn run_script(
        &self,
        dir: &Path,
        script: &str,
        env: &[(&str, String)],
        log: &Path,
    ) -> Result<()> {
        let dir = dir
            .canonicalize()
            .ctx(|| format!("resolving {}", dir.display()))?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-euc"])
            .arg("mount --bind \"$HEARTH_WORK\" \"$HEARTH_TOOLS/work\"; exec chroot \"$HEARTH_TOOLS\" /bin/sh -euc \"$HEARTH_SCRIPT\"")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C.UTF-8")
            .env("TZ", "UTC")
            .env("HEARTH_WORK", &dir)
            .env("HEARTH_TOOLS", &self.root)
            .env("HEARTH_SCRIPT", script);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd, log).map_err(|e| {
            if e.to_string().contains("cannot start unshare") {
                Error::new(format!("{e}"))
                    .hint("unshare is in util-linux; the build must run as root")
            } else {
                e
            }
        })
    }

    /// Versions of the tools, for the manifest.
    pub fn versions(&self) -> Vec<(String, String)> {
        let status =
            std::fs::read_to_string(self.root.join("var/lib/dpkg/status")).unwrap_or_default();
        let mut out = vec![];
        for rec in status.split("\n\n") {
            let f = |k: &str| {
                rec.lines()
                    .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            };
            if let (Some(n), Some(v)) = (f("Package:"), f("Version:")) {
                if PACKAGES.contains(&n.as_str()) {
                    out.push((n, v));
                }
            }
        }
        out.sort();
        out
    }
}
